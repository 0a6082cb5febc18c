"""Host contract: every ComfyUI name the pack relies on, and what it relies on it for.

A new ComfyUI release fails here first, with the host API and the pack code that uses it
named, instead of deep inside a sampler. Signature checks ask for the parameters the pack
passes (new optional parameters are fine); behaviour checks run the tiny SVD model.
When you make the pack touch a new host name, add it to CONTRACTS.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import pytest

pytestmark = pytest.mark.host


@dataclass(frozen=True)
class Contract:
    api: str                 # "module:attr.attr" on the host
    users: str               # pack code that relies on it
    params: tuple = ()       # parameter names the pack passes (callables only)
    attrs: tuple = ()        # attributes the pack reads (classes/modules)
    check: Callable | None = None  # extra check on the resolved object; returns an error or None


def _resolve(api: str):
    module, _, path = api.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def _is_async(fn) -> str | None:
    return None if inspect.iscoroutinefunction(fn) else "is no longer a coroutine function"


def _sets(*names: str) -> Callable:
    """Instance attributes the pack reads: the class's own code must still assign them."""
    def check(cls) -> str | None:
        source = inspect.getsource(cls)
        missing = [n for n in names if f"self.{n} =" not in source and f"self.{n}: " not in source]
        return f"no longer sets self.{', self.'.join(missing)}" if missing else None
    return check


IO_TYPES = ("Model", "Image", "Latent", "Conditioning", "ClipVision", "Vae", "Guider", "Sampler", "Int", "Float",
            "Boolean", "Combo", "String")

CONTRACTS = [
    # --- sampling: guiders, samplers, model calls
    Contract("comfy.samplers:CFGGuider", "samplers/guider.py (SVDInbetweenGuider, SVDInbetweenChainGuider)",
             attrs=("sample", "inner_sample", "outer_sample", "predict_noise", "inner_set_conds", "set_cfg",
                    "__call__")),
    Contract("comfy.samplers:CFGGuider.sample", "samplers/guider.py SVDInbetweenGuider.sample / ChainGuider.sample",
             params=("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "callback", "disable_pbar", "seed")),
    Contract("comfy.samplers:CFGGuider.inner_sample", "samplers/chain_guider.py SVDInbetweenChainGuider.inner_sample "
             "(binds its arguments by name, processes each segment's conds, then calls the host's)",
             params=("noise", "latent_image", "device", "sampler", "sigmas", "denoise_mask", "callback",
                     "disable_pbar", "seed")),
    Contract("comfy.samplers:CFGGuider.predict_noise", "samplers/guider.py predict_noise overrides",
             params=("x", "timestep", "model_options", "seed")),
    Contract("comfy.samplers:calc_cond_batch", "samplers/guider.py SVDInbetweenGuider._unet (4-cond dual calls)",
             params=("model", "conds", "x_in", "timestep", "model_options")),
    Contract("comfy.samplers:cfg_function", "samplers/guider.py SVDInbetweenGuider._guide",
             params=("model", "cond_pred", "uncond_pred", "cond_scale", "x", "timestep", "model_options", "cond",
                     "uncond")),
    Contract("comfy.samplers:process_conds", "samplers/chain_guider.py SVDInbetweenChainGuider.inner_sample",
             params=("model", "noise", "conds", "device", "latent_image", "denoise_mask", "seed")),
    Contract("comfy.samplers:KSAMPLER", "samplers/recurrent_euler.py, samplers/vibid.py (SAMPLER outputs)",
             params=("sampler_function", "extra_options", "inpaint_options")),
    Contract("comfy.samplers:calculate_sigmas", "samplers/run.py run_guider, bench/reference.py",
             params=("model_sampling", "scheduler_name", "steps")),
    Contract("comfy.samplers:SCHEDULER_NAMES", "nodes/inputs.py scheduler combo",
             check=lambda v: None if "karras" in v else "has no 'karras'"),
    Contract("comfy.sample:prepare_noise", "samplers/run.py run_guider (KSampler's initial noise)",
             params=("latent_image", "seed")),
    Contract("comfy.sample:fix_empty_latent_channels", "samplers/run.py run_guider", params=("model", "latent_image")),
    Contract("comfy.sampler_helpers:prepare_sampling", "samplers/chain_guider.py PREPARE_SAMPLING wrapper "
             "(reads noise_shape, passes *args/**kwargs on)", params=("model", "noise_shape", "conds", "model_options")),
    Contract("comfy.patcher_extension:WrappersMP", "samplers/chain_guider.py (PREPARE_SAMPLING), samplers/guider.py "
             "(APPLY_MODEL)", attrs=("PREPARE_SAMPLING", "APPLY_MODEL")),
    Contract("comfy.model_base:BaseModel.apply_model", "samplers/guider.py direction_wrapper (an APPLY_MODEL wrapper; "
             "binds its arguments by name to find transformer_options)", params=("x", "t", "transformer_options"),
             check=lambda f: None if "WrappersMP.APPLY_MODEL" in inspect.getsource(f) else "no longer runs APPLY_MODEL wrappers"),
    Contract("comfy.patcher_extension:add_wrapper_with_key", "samplers/chain_guider.py SVDInbetweenChainGuider.sample, "
             "samplers/guider.py SVDInbetweenGuider._unet",
             params=("wrapper_type", "key", "wrapper", "is_model_options")),
    Contract("comfy.model_patcher:create_model_options_clone", "samplers/chain_guider.py, samplers/guider.py _unet",
             params=("orig_model_options",)),
    Contract("comfy.model_patcher:ModelPatcher", "attention_patch/layers.py with_proxies, weights/apply.py, "
             "samplers/validation.py", attrs=("clone", "add_object_patch", "get_model_object", "model_dtype"),
             check=_sets("object_patches", "model_options", "load_device", "model")),
    # --- the UNet pieces the proxies stand in for
    Contract("comfy.ldm.modules.attention:CrossAttention", "attention_patch/proxy.py TemporalAttentionProxy "
             "(shares to_q/to_k/to_v/to_out and heads, calls the original with transformer_options)",
             check=lambda c: next((f"no longer sets self.{a}" for a in ("to_q", "to_k", "to_v", "to_out", "heads")
                                   if f"self.{a}" not in inspect.getsource(c.__init__)), None)),
    Contract("comfy.ldm.modules.attention:CrossAttention.forward", "attention_patch/proxy.py TemporalAttentionProxy.forward",
             params=("x", "context", "value", "mask", "transformer_options")),
    Contract("comfy.ldm.modules.attention:FeedForward", "attention_patch/feedforward.py (wraps `.net`)",
             check=lambda c: None if "self.net" in inspect.getsource(c.__init__) else "has no `net`"),
    Contract("comfy.ldm.modules.attention:SpatialVideoTransformer", "weights/train.py (gradient checkpointing)"),
    Contract("comfy.ldm.modules.attention:attention_pytorch", "bench/fullsize.py (meta-device trace)",
             params=("q", "k", "v", "heads")),
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:VideoResBlock", "weights/train.py (gradient checkpointing)"),
    Contract("comfy.k_diffusion.sampling:to_d", "samplers/recurrent_euler.py", params=("x", "sigma", "denoised")),
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:UNetModel", "attention_patch/layers.py "
             "(time_stack.0.attn1 module paths), bench/fullsize.py"),
    Contract("comfy.supported_models:SVD_img2vid", "bench/models.py, tests/tiny_models.py (tiny and meta SVD UNets)",
             attrs=("unet_config", "get_model", "set_inference_dtype")),
    Contract("comfy.model_base:SVD_img2vid", "samplers/validation.py check_model, weights/train.py",
             attrs=("extra_conds", "process_latent_in", "process_latent_out")),
    Contract("comfy.sd:load_checkpoint_guess_config", "weights/train.py, bench", params=("ckpt_path",)),
    # --- lowvram and auto (samplers/execution.py, attention_patch/chunking.py, attention_patch/memory.py)
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:ResBlock", "attention_patch/chunking.py FrameChunked "
             "(object-patches in_layers/out_layers of spatial res-blocks, which _forward calls whole)",
             check=lambda c: _sets("in_layers", "out_layers", "updown", "use_scale_shift_norm")(c) or next(
                 (f"_forward no longer calls {call}" for call in ("self.in_layers(x)", "self.out_layers(h)")
                  if call not in inspect.getsource(c._forward)), None)),
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:UNetModel.__init__", "samplers/execution.py "
             "activation_terms (model_channels, input/output blocks and their Downsample/Upsample levels)",
             check=_sets("model_channels", "input_blocks", "output_blocks")),
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:Downsample", "samplers/execution.py _levels (by name)"),
    Contract("comfy.ldm.modules.diffusionmodules.openaimodel:Upsample", "samplers/execution.py _levels (by name)"),
    Contract("comfy.model_base:BaseModel.memory_required", "attention_patch/memory.py CalibratedMemoryRequired "
             "(object patch; passes input_shape and the rest on)", params=("input_shape",)),
    Contract("comfy.samplers", "attention_patch/memory.py (calc_cond_batch batches while memory_required x 1.5 "
             "is below the free memory)",
             check=lambda m: None if "memory_required(input_shape, cond_shapes=cond_shapes) * 1.5 <"
             in inspect.getsource(m) else "calc_cond_batch no longer compares memory_required * 1.5 with free memory"),
    Contract("comfy.model_patcher:ModelPatcher.model_size", "samplers/execution.py streamed_weight_bytes"),
    Contract("comfy.model_patcher:ModelPatcher.loaded_size", "samplers/execution.py streamed_weight_bytes"),
    Contract("comfy.model_management:dtype_size", "samplers/execution.py execution_estimates", params=("dtype",)),
    Contract("comfy.sd:VAE", "bench/workflow.py (the SVD temporal VAE on the meta device, its decode batches); "
             "samplers/request.py check_encode_fits (ComfyUI's encode estimate on a CPU VAE)",
             params=("sd",), check=_sets("first_stage_model", "memory_used_decode", "memory_used_encode", "device",
                                         "vae_dtype")),
    Contract("comfy.clip_model:CLIPVisionModelProjection", "bench/workflow.py (ViT-H on the meta device)",
             params=("config_dict", "dtype", "device", "operations")),
    Contract("comfy.ldm.modules.diffusionmodules.model:AttnBlock", "bench/workflow.py (flash-style VAE attention)",
             check=_sets("optimized_attention")),
    # --- memory, progress, interrupts
    Contract("comfy.model_management", "samplers/execution.py (auto), samplers/*, weights/train.py, "
             "samplers/request.py (what a request needs against the machine's total memory)",
             attrs=("throw_exception_if_processing_interrupted", "get_free_memory", "get_torch_device",
                    "intermediate_device", "load_models_gpu", "soft_empty_cache", "current_loaded_models",
                    "get_total_memory")),
    Contract("comfy.model_management:get_total_memory", "samplers/request.py", params=("dev",)),
    Contract("comfy.utils", "samplers/run.py (ProgressBar), samplers/guider.py (common_upscale), bench (set_attr)",
             attrs=("ProgressBar", "common_upscale", "set_attr", "get_attr", "PROGRESS_BAR_ENABLED")),
    # --- nodes, folders, execution
    Contract("comfy_api.latest:ComfyExtension", "__init__.py comfy_entrypoint", attrs=("get_node_list",)),
    Contract("comfy_api.latest:io", "nodes/*.py (V3 schemas)",
             attrs=("ComfyNode", "Schema", "NodeOutput", *IO_TYPES),
             check=lambda io: next((f"io.{t} lost Input/Output" for t in IO_TYPES
                                    if not hasattr(getattr(io, t), "Input")), None)),
    Contract("comfy_api.latest:io.Schema", "nodes/*.py define_schema",
             params=("node_id", "display_name", "category", "inputs", "outputs", "description")),
    Contract("folder_paths", "__init__.py (models/svd_inbetween), nodes/weights.py, cli",
             attrs=("folder_names_and_paths", "add_model_folder_path", "get_full_path",
                    "get_filename_list", "set_input_directory", "set_output_directory", "set_temp_directory",
                    "models_dir")),
    Contract("nodes", "client/comfy_session.py (in-process tests, tools/build_workflows.py); samplers/request.py "
             "MAX_SIZE is its MAX_RESOLUTION (test_request_limits)",
             attrs=("init_extra_nodes", "load_custom_node", "NODE_CLASS_MAPPINGS", "MAX_RESOLUTION")),
    Contract("nodes:init_extra_nodes", "client/comfy_session.py", params=("init_custom_nodes", "init_api_nodes"),
             check=_is_async),
    Contract("nodes:load_custom_node", "client/comfy_session.py", params=("module_path",), check=_is_async),
    Contract("execution:PromptExecutor", "client/comfy_session.py new_prompt_executor",
             params=("server", "cache_type"), attrs=("execute",),
             check=_sets("success", "status_messages", "history_result", "caches")),
    Contract("execution:CacheType", "client/comfy_session.py new_prompt_executor", attrs=("CLASSIC",)),
    Contract("execution:validate_prompt", "client/comfy_session.py ComfySession.run",
             params=("prompt_id", "prompt"), check=_is_async),
    # --- Wan (wan/pieces.py, nodes/wan.py): the VAE's public calls, the conds WAN21.concat_cond reads
    Contract("comfy.sd:VAE.encode", "wan/pieces.py encode (one causal piece at a time)", params=("pixel_samples",)),
    Contract("comfy.sd:VAE.decode", "wan/pieces.py decode (one causal piece at a time)", params=("samples_in",)),
    Contract("comfy.sd:VAE", "wan/pieces.py is_wan21_vae",
             attrs=("temporal_compression_decode", "spacial_compression_encode"), check=_sets("latent_channels")),
    Contract("comfy.model_base:WAN21.concat_cond", "nodes/wan.py (concat_latent_image, concat_mask [1, 4, T, h, w] "
             "read as 1 - mask)", check=lambda f: next((f"no longer reads {k}" for k in (
                 '"concat_latent_image"', '"concat_mask"') if k not in inspect.getsource(f)), None)),
    Contract("comfy.model_base:WAN21.extra_conds", "nodes/wan.py (clip_vision_output's penultimate_hidden_states)",
             check=lambda f: None if '"clip_vision_output"' in inspect.getsource(f)
             else "no longer reads clip_vision_output"),
    Contract("comfy.clip_vision:Output", "nodes/wan.py _clip_vision (start and end tokens side by side)"),
    Contract("comfy.model_base:WAN21", "nodes/wan.py _check_model (isinstance; diffusion_model.patch_embedding's "
             "input channels)", attrs=("concat_cond", "extra_conds")),
    Contract("node_helpers:conditioning_set_values", "nodes/wan.py SVDInbetweenWanKeyframes",
             params=("conditioning", "values")),
    Contract("comfy.model_management:intermediate_device", "nodes/wan.py (the empty latent's device)"),
    Contract("comfy.model_management:get_torch_device", "nodes/wan.py lpips_distance"),
    Contract("folder_paths:get_full_path", "nodes/wan.py lpips_distance (models/lpips)",
             params=("folder_name", "filename")),
    # --- the server: the template listing the pack filters (tests/test_host_film.py runs it on a real server)
    Contract("server:PromptServer", "__init__.py / templates.py install (PromptServer.instance.app.middlewares)",
             check=lambda cls: _sets("app")(cls) or (None if "PromptServer.instance = self" in inspect.getsource(cls)
                                                     else "no longer sets PromptServer.instance")),
    Contract("app.custom_node_manager:CustomNodeManager", "templates.py (GET /workflow_templates: {pack: [names]})",
             attrs=("add_routes",),
             check=lambda cls: None if '"/workflow_templates"' in inspect.getsource(cls)
             else "no longer serves /workflow_templates"),
]


def _signature_problem(obj, params) -> str | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "has no inspectable signature"
    names = set(sig.parameters)
    missing = [p for p in params if p not in names]
    return f"lost parameter(s) {', '.join(missing)} (has {', '.join(names)})" if missing else None


def _version() -> str:
    try:
        import comfyui_version
        return comfyui_version.__version__
    except ImportError:
        return "?"


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.api for c in CONTRACTS])
def test_host_api(contract: Contract):
    where = f"ComfyUI {_version()}: host API `{contract.api}`"
    try:
        obj = _resolve(contract.api)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{where} is gone ({e}). Pack code that relies on it: {contract.users}")
    problems = []
    if contract.params:
        problems.append(_signature_problem(obj, contract.params))
    problems += [f"lost attribute `{a}`" for a in contract.attrs if not hasattr(obj, a)]
    if contract.check is not None:
        problems.append(contract.check(obj))
    problems = [p for p in problems if p]
    assert not problems, f"{where} changed: {'; '.join(problems)}. Pack code that relies on it: {contract.users}"


# --- behaviour the pack relies on, checked on the tiny SVD model ------------------------------------------

def test_model_function_wrapper_and_transformer_options_keys(tiny):
    """calc_cond_batch hands model_function_wrapper {input, timestep, c, cond_or_uncond} and
    the temporal attn1 modules receive transformer_options["cond_or_uncond"].
    Used by bench/measure.py UnetCounter (call counts), attention_patch/proxy.py and
    samplers/guider.py direction_wrapper (cond_or_uncond inside apply_model's transformer_options)."""
    import comfy.model_management
    import comfy.samplers
    import torch
    from svd_inbetween.attention_patch.layers import PREFIX, temporal_attn1_paths

    m = tiny.model.clone()
    seen_args, seen_topts = [], []
    path = temporal_attn1_paths(m)[0]
    original = m.get_model_object(PREFIX + path)

    class Spy(torch.nn.Module):
        def forward(self, x, *args, **kwargs):
            seen_topts.append(kwargs.get("transformer_options", {}))
            return original(x, *args, **kwargs)

    m.add_object_patch(PREFIX + path, Spy())

    def wrapper(apply_model, args):
        seen_args.append(args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.model_options["model_function_wrapper"] = wrapper
    comfy.model_management.load_models_gpu([m])
    positive, negative, *_, latent = tiny.conds
    guider = comfy.samplers.CFGGuider(m)
    guider.set_conds(positive, negative)
    guider.set_cfg(2.0)
    x = torch.randn_like(latent["samples"])
    sigmas = torch.tensor([1.0, 0.0])
    guider.sample(x, latent["samples"], comfy.samplers.sampler_object("euler"), sigmas, seed=0)
    api = "ComfyUI model_function_wrapper / transformer_options"
    assert seen_args, f"{api}: model_function_wrapper was never called (bench/measure.py UnetCounter)"
    missing = {"input", "timestep", "c", "cond_or_uncond"} - set(seen_args[0])
    assert not missing, f"{api}: wrapper args lost {missing} (bench/measure.py UnetCounter)"
    assert "cond_or_uncond" in seen_args[0]["c"].get("transformer_options", {}), \
        f"{api}: apply_model's transformer_options lost 'cond_or_uncond' (samplers/guider.py direction_wrapper)"
    assert seen_topts and "cond_or_uncond" in seen_topts[0], \
        f"{api}: temporal attn1 no longer sees transformer_options['cond_or_uncond'] (attention_patch/proxy.py)"


def test_multigpu_clones_key_when_host_has_multigpu():
    """0.33+ routes calc_cond_batch to its multi-GPU split on model_options["multigpu_clones"];
    samplers/guider.py drops that key for its dual-direction calls (partners stay together)."""
    import comfy.samplers
    from svd_inbetween.samplers.guider import MULTIGPU_CLONES_KEY
    if importlib.util.find_spec("comfy.multigpu") is None:
        assert not hasattr(comfy.samplers, "_calc_cond_batch_multigpu")
        return
    source = inspect.getsource(comfy.samplers)  # calc_cond_batch -> _calc_cond_batch_outer on 0.33
    assert f"'{MULTIGPU_CLONES_KEY}' in model_options" in source, \
        (f"ComfyUI {_version()}: calc_cond_batch no longer dispatches multi-GPU on model_options"
         f"[{MULTIGPU_CLONES_KEY!r}]; samplers/guider.py SVDInbetweenGuider._unet must learn the new way to keep "
         "forward and backward chunks together")


def test_frame_interpolation_nodes_or_film_template_hidden():
    """templates.py / cli/film.py / workflows/svd_inbetween_film.json use the host's FILM nodes (0.33+):
    FrameInterpolationModelLoader(model_name from folder 'frame_interpolation') and FrameInterpolate(interp_model,
    images, multiplier 2..16). A host without them must list no FILM template: templates.py hides it."""
    from host import load_host_nodes
    from svd_inbetween.cli.film import FOLDER, MAX_MULTIPLIER
    from svd_inbetween.templates import unavailable_templates
    where = f"ComfyUI {_version()}"
    known = load_host_nodes()
    if "FrameInterpolate" not in known:
        assert unavailable_templates(known) == ["svd_inbetween_film"], \
            f"{where} has no FrameInterpolate: only svd_inbetween_film may be hidden (templates.py)"
        return
    import folder_paths
    assert FOLDER in folder_paths.folder_names_and_paths, f"{where}: no models/{FOLDER} folder (cli/film.py)"
    loader = known["FrameInterpolationModelLoader"].INPUT_TYPES()["required"]
    assert "model_name" in loader, f"{where}: FrameInterpolationModelLoader lost model_name (cli/film.py)"
    inputs = known["FrameInterpolate"].INPUT_TYPES()["required"]
    assert {"interp_model", "images", "multiplier"} <= set(inputs), f"{where}: FrameInterpolate inputs {list(inputs)}"
    assert inputs["multiplier"][1]["max"] >= MAX_MULTIPLIER, f"{where}: FrameInterpolate multiplier max changed"
    assert unavailable_templates(known) == [], f"{where}: a shipped template names a node this host lacks"
