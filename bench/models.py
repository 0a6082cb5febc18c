"""The models and inputs the benchmark runs on: SVD UNets built with ComfyUI's own classes.

`tiny` keeps SVD-XT's block structure (the same 16 temporal attn1 module paths) at
model_channels 32, so it runs in well under a second per step on a CPU. `full` is the
real SVD-XT architecture (model_channels 320, 64-dim heads, 1024-d context); on the
meta device it costs no memory and is what the full-size accounting counts.
Weights are random (seeded): the benchmark measures work and memory, not pictures.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning.keyframes import FRAMES_KEY



@dataclass(frozen=True)
class Arch:
    model_channels: int
    head_channels: int
    context_dim: int


ARCH = {"tiny": Arch(32, 16, 64), "full": Arch(320, 64, 1024)}
ARCHS = tuple(ARCH)


def unet_config(arch: str) -> dict:
    """ComfyUI UNetModel config of SVD-XT (what ComfyUI detects from the checkpoint), scaled by `arch`."""
    a = ARCH[arch]
    return {
        "model_channels": a.model_channels, "in_channels": 8, "out_channels": 4, "use_linear_in_transformer": True,
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
        "transformer_depth_middle": 1, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
        "context_dim": a.context_dim, "adm_in_channels": 768, "use_temporal_attention": True,
        "use_temporal_resblock": True, "image_size": 32, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "disable_self_attentions": None,
        "num_attention_blocks": None, "extra_ff_mix_layer": True, "use_spatial_context": True,
        "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
        "disable_temporal_crossattention": False, "max_ddpm_temb_period": 10000,
    }


def init_random(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """ComfyUI creates layers uninitialised: zero biases and mix factors, unit norms, small normals."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "mix_factor" in name:
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))


def svd_base_model(arch: str = "tiny", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                   seed: int | None = 0, compute_dtype: torch.dtype | None = None):
    """A ComfyUI `SVD_img2vid` BaseModel; random weights unless on the meta device or seed is None.
    compute_dtype: ComfyUI's manual cast (weights stored in `dtype`, layers run in compute_dtype)."""
    import comfy.supported_models

    if arch not in ARCH:
        raise ValueError(f"svd-inbetween bench: --arch must be one of {ARCHS}, got {arch!r}")
    mc = comfy.supported_models.SVD_img2vid(unet_config(arch))
    mc.unet_config["num_head_channels"] = ARCH[arch].head_channels
    mc.set_inference_dtype(dtype, compute_dtype)
    model = mc.get_model({}, device=torch.device(device))
    if seed is not None and torch.device(device).type != "meta":
        init_random(model.diffusion_model, seed)
    return model


def svd_patcher(arch: str = "tiny", dtype: torch.dtype = torch.float32, seed: int = 0,
                compute_dtype: torch.dtype | None = None):
    """`svd_base_model` in a ModelPatcher on ComfyUI's compute device (weights start on the offload device)."""
    import comfy.model_management
    import comfy.model_patcher

    model = svd_base_model(arch, dtype, "cpu", seed, compute_dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def random_backward_weights(model_patcher, scale: float = 0.1, seed: int = 5) -> dict:
    """Absolute W_v', W_o' per temporal attn1 path = stock + seeded noise, like a fine-tune gives."""
    from ..weights.apply import model_base_weights

    g = torch.Generator().manual_seed(seed)
    out = {}
    for path, (wv, wo) in model_base_weights(model_patcher).items():
        pair = []
        for w in (wv, wo):
            w32 = w.detach().float().cpu()
            pair.append((w32 + scale * w32.std() * torch.randn(w32.shape, generator=g)).to(w.dtype))
        out[path] = tuple(pair)
    return out


def random_conds(arch: str, width: int, height: int, frames: int, seed: int = 1):
    """(positive_start, negative_start, positive_end, negative_end, latent) laid out like
    SVD_img2vid_Conditioning's: random CLIP embeddings and keyframe latents stand in for the
    encoders (the benchmark measures sampling, not encoding)."""
    g = torch.Generator().manual_seed(seed)
    dim = ARCH[arch].context_dim
    extra = {"motion_bucket_id": 127, "fps": 7, "augmentation_level": 0.02, FRAMES_KEY: frames}
    conds = []
    for _ in range(2):
        pooled = torch.randn(1, 1, dim, generator=g)
        latent = torch.randn(1, 4, height // 8, width // 8, generator=g)
        conds.append([[pooled, dict(extra, concat_latent_image=latent)]])
        conds.append([[torch.zeros_like(pooled), dict(extra, concat_latent_image=torch.zeros_like(latent))]])
    return (*conds, {"samples": torch.zeros([frames, 4, height // 8, width // 8])})
