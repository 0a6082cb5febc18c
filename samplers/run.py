"""One call from node inputs to sampled latents; shared by the nodes and the CLI."""
from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..attention_patch.layers import with_proxies
from .execution import EXECUTIONS
from .guidance import linear_cfg
from .guider import SVDInbetweenGuider
from .recurrent_euler import recurrent_euler_for
from .validation import check_choice, check_conds_fit_model, check_inputs, check_model, fail


def check_forward_weight(node: str, forward_weight: float) -> None:
    if not 0.0 <= forward_weight <= 1.0:
        fail(node, "forward_weight", f"must be in [0, 1], got {forward_weight}")


def make_guider(node: str, model, positive_start, negative_start, positive_end, negative_end, cfg: float,
                mode: str, forward_weight: float, execution: str, guidance: str = "constant",
                min_cfg: float = 1.0) -> SVDInbetweenGuider:
    check_model(node, model, mode)
    check_choice(node, "execution", execution, EXECUTIONS)
    conds = {"positive_start": positive_start, "negative_start": negative_start,
             "positive_end": positive_end, "negative_end": negative_end}
    check_inputs(node, conds, None, cfg=cfg)
    check_conds_fit_model(node, model, conds)
    check_forward_weight(node, forward_weight)
    m = with_proxies(model)
    if guidance == "linear":
        m.set_model_sampler_cfg_function(linear_cfg(min_cfg))
    elif guidance != "constant":
        fail(node, "guidance", f"must be 'constant' or 'linear', got {guidance!r}")
    guider = SVDInbetweenGuider(m, mode=mode, forward_weight=forward_weight, execution=execution)
    guider.set_conds(positive_start, negative_start, positive_end, negative_end)
    guider.set_cfg(cfg)
    return guider


def sample_inbetween(node: str, model, positive_start, negative_start, positive_end, negative_end, latent: dict,
                     seed: int, steps: int, cfg: float, mode: str = "gi", recurrence: int = 5,
                     recurrence_ratio: float = 0.5, forward_weight: float = 0.5, execution: str = "auto",
                     scheduler: str = "karras", guidance: str = "constant", min_cfg: float = 1.0,
                     callback=None) -> dict:
    samples = latent["samples"]
    check_inputs(node, {"positive_start": positive_start, "positive_end": positive_end}, samples, steps=steps)
    guider = make_guider(node, model, positive_start, negative_start, positive_end, negative_end, cfg, mode,
                         forward_weight, execution, guidance, min_cfg)
    return run_guider(node, guider, latent, seed, steps, scheduler, recurrent_euler_for(node, recurrence, recurrence_ratio),
                      callback)


def run_guider(node: str, guider, latent: dict, seed: int, steps: int, scheduler: str, sampler,
               callback=None) -> dict:
    """Sigmas, seeded initial noise, progress bar, guider.sample -> a LATENT dict (as KSampler does)."""
    check_choice(node, "scheduler", scheduler, comfy.samplers.SCHEDULER_NAMES)
    if steps < 1:
        fail(node, "steps", f"must be >= 1, got {steps}")
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), scheduler, steps)
    samples = comfy.sample.fix_empty_latent_channels(guider.model_patcher, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed)
    if callback is None:
        callback = latent_preview.prepare_callback(guider.model_patcher, steps)
    out = guider.sample(noise, samples, sampler, sigmas, callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out.to(comfy.model_management.intermediate_device())
    return result
