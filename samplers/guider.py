"""The dual-direction GUIDER: forward from the start frame, backward from the end frame, fused."""
from __future__ import annotations

import logging
import math

import torch

import comfy.model_management
import comfy.samplers

from ..attention_patch.layers import rotate_layers, temporal_attn1_paths
from ..attention_patch.rotation import flip_frames
from ..attention_patch.run_state import (BACKWARD_COND, BACKWARD_UNCOND, FORWARD_COND, FORWARD_UNCOND, RUN_KEY,
                                         InbetweenRun, is_backward)
from .execution import EXECUTIONS, choose_execution, estimate_memory
from .fusion import fuse

log = logging.getLogger(__name__)


def _flip_chunks(t: torch.Tensor, backward: list[bool], frames: int) -> torch.Tensor:
    """Reverse time in the chunks marked backward; the batch holds one chunk per flag."""
    chunks = t.chunk(len(backward))
    return torch.cat([flip_frames(c, frames) if b else c for c, b in zip(chunks, backward)])


def direction_wrapper(frames: int, inner=None):
    """model_function_wrapper: backward chunks see flip(x) (and flipped per-frame conds) and
    their outputs are flipped back, so calc_cond_batch can feed the same x to all four conds."""
    def wrapper(apply_model, args):
        chunk_ids = args["cond_or_uncond"]
        backward = [is_backward(c) for c in chunk_ids]
        x = args["input"]
        if any(backward):
            batch = x.shape[0]
            if batch != frames * len(chunk_ids):
                raise RuntimeError(f"SVD inbetween: expected {len(chunk_ids)} chunks of {frames} frames, got a batch of {batch}")
            x = _flip_chunks(x, backward, frames)
            c = {k: _flip_chunks(v, backward, frames) if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == batch else v
                 for k, v in args["c"].items()}
            args = dict(args, input=x, c=c)
        if inner is not None:
            out = inner(apply_model, args)
        else:
            out = apply_model(args["input"], args["timestep"], **args["c"])
        return _flip_chunks(out, backward, frames) if any(backward) else out
    return wrapper


class SVDInbetweenGuider(comfy.samplers.CFGGuider):
    """CFGGuider with four conds: forward (start frame) and backward (end frame) pairs.

    Each step returns w * forward + (1 - w) * flip(backward(flip(x))), both guided with
    their own CFG in their own time direction. Fusing denoised predictions at the same
    x and sigma equals fusing v-predictions (denoised is affine in v).
    """

    def __init__(self, model_patcher, mode: str = "gi", forward_weight: float = 0.5, execution: str = "auto"):
        super().__init__(model_patcher)
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.paths = temporal_attn1_paths(model_patcher)
        self.mode = mode
        self.layers = rotate_layers(self.paths, mode)
        self.forward_weight = float(forward_weight)
        self.execution = execution
        self.chosen_execution: str | None = None
        self._run: InbetweenRun | None = None
        self.last_peak_map_bytes = 0

    def set_conds(self, positive_start, negative_start, positive_end=None, negative_end=None):
        conds = {"positive": positive_start, "negative": negative_start}
        if positive_end is not None:
            conds["positive_end"] = positive_end
            conds["negative_end"] = negative_end
        self.inner_set_conds(conds)

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        frames = noise.shape[0]
        self._run = InbetweenRun(rotate_layers=self.layers, finetuned=self.mode == "gi", frames=frames)
        self.chosen_execution = None
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.last_peak_map_bytes = self._run.peak_map_bytes
            self._run.clear()
            self._run = None

    def _execution_for(self, x: torch.Tensor) -> str:
        if self.chosen_execution is None:
            budget = estimate_memory(self.inner_model, self.paths, self.layers, x)
            free = comfy.model_management.get_free_memory(x.device)
            self.chosen_execution = choose_execution(self.execution, free, budget)
        return self.chosen_execution

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        w = self.forward_weight
        if "positive_end" not in self.conds or w == 1.0:
            return super().predict_noise(x, timestep, model_options, seed)
        run = self._run
        use_uncond = not (math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False))
        conds = [None] * 4
        conds[BACKWARD_COND] = self.conds["positive_end"]
        conds[FORWARD_COND] = self.conds["positive"]
        if use_uncond:
            conds[BACKWARD_UNCOND] = self.conds["negative_end"]
            conds[FORWARD_UNCOND] = self.conds["negative"]
        run.active = frozenset(i for i, c in enumerate(conds) if c is not None)

        opts = model_options.copy()
        topts = dict(opts.get("transformer_options", {}))
        topts[RUN_KEY] = run
        opts["transformer_options"] = topts
        opts["model_function_wrapper"] = direction_wrapper(x.shape[0], model_options.get("model_function_wrapper"))
        try:
            if self._execution_for(x) == "batched":
                out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, opts)
            else:
                fwd_only = [c if not is_backward(i) else None for i, c in enumerate(conds)]
                bwd_only = [c if is_backward(i) else None for i, c in enumerate(conds)]
                out_f = comfy.samplers.calc_cond_batch(self.inner_model, fwd_only, x, timestep, opts)
                comfy.model_management.throw_exception_if_processing_interrupted()
                out_b = comfy.samplers.calc_cond_batch(self.inner_model, bwd_only, x, timestep, opts)
                out = [out_b[0], out_b[1], out_f[2], out_f[3]]
            if run.maps:
                raise RuntimeError(f"SVD inbetween: {len(run.maps)} attention maps were captured but never used")
        finally:
            run.clear()

        frames = x.shape[0]
        forward = self._guide(out[FORWARD_COND], out[FORWARD_UNCOND], x, timestep, model_options,
                              conds[FORWARD_COND], conds[FORWARD_UNCOND])
        flip = lambda t: flip_frames(t, frames)  # noqa: E731
        backward = flip(self._guide(flip(out[BACKWARD_COND]), flip(out[BACKWARD_UNCOND]), flip(x), timestep,
                                    model_options, conds[BACKWARD_COND], conds[BACKWARD_UNCOND]))
        return fuse(forward, backward, w)

    def _guide(self, cond_pred, uncond_pred, x, timestep, model_options, cond, uncond):
        """Stock CFG (including any sampler_cfg_function on the model) in one direction's own time."""
        for fn in model_options.get("sampler_pre_cfg_function", []):
            cond_pred, uncond_pred = fn({"conds": [cond, uncond], "conds_out": [cond_pred, uncond_pred],
                                         "cond_scale": self.cfg, "timestep": timestep, "input": x, "sigma": timestep,
                                         "model": self.inner_model, "model_options": model_options})
        return comfy.samplers.cfg_function(self.inner_model, cond_pred, uncond_pred, self.cfg, x, timestep,
                                           model_options=model_options, cond=cond, uncond=uncond)
