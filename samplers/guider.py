"""The dual-direction GUIDER: forward from the start frame, backward from the end frame, fused."""
from __future__ import annotations

import contextlib
import inspect
import logging
import math

import torch

import comfy.model_management
import comfy.samplers

from ..attention_patch.chunking import low_memory
from ..attention_patch.feedforward import per_video_feedforward
from ..attention_patch.layers import rotate_layers, temporal_attn1_paths
from ..attention_patch.rotation import flip_frames
from ..attention_patch.run_state import (BACKWARD_COND, BACKWARD_UNCOND, FORWARD_COND, FORWARD_UNCOND, RUN_KEY,
                                         InbetweenRun, is_backward)
from .execution import (EXECUTIONS, calibrated_call, call_groups, choose_execution, execution_estimates, free_memory,
                        needed_bytes)
from .fusion import fuse
from .validation import fail
from .vibid import ANSWERS_MARK, BACKWARD, DIRECTION_KEY, FORWARD, SEQUENTIAL_MARK, SEQUENTIAL_MODES, DirectionRequest

log = logging.getLogger(__name__)

# model_options key under which ComfyUI 0.33+ (MultiGPU CFG Split) hands calc_cond_batch its
# per-device model clones; without it calc_cond_batch runs every cond on the main device.
MULTIGPU_CLONES_KEY = "multigpu_clones"


def _flip_chunks(t: torch.Tensor, backward: list[bool], frames: int) -> torch.Tensor:
    """Reverse time in the chunks marked backward; the batch holds one chunk per flag."""
    chunks = t.chunk(len(backward))
    return torch.cat([flip_frames(c, frames) if b else c for c, b in zip(chunks, backward)])


def direction_wrapper(frames: int, inner=None, chunked: bool = False):
    """model_function_wrapper: backward chunks see flip(x) (and flipped per-frame conds) and
    their outputs are flipped back, so calc_cond_batch can feed the same x to all four conds.
    chunked: the call runs under chunking.low_memory (the lowvram execution)."""
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
        with per_video_feedforward(len(chunk_ids)), low_memory() if chunked else contextlib.nullcontext():
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

    A sampler may instead ask for one direction per call (a DirectionRequest in
    model_options, see samplers/vibid.py). A backward-only call in a rotating mode still
    runs the forward chunks on the same x, in the same call when batched, because the
    backward chunks consume their attention maps; their outputs are dropped.
    """

    def __init__(self, model_patcher, mode: str = "gi", forward_weight: float = 0.5, execution: str = "auto"):
        super().__init__(model_patcher)
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.paths = temporal_attn1_paths(model_patcher)
        self.mode = mode
        self.rotation = SEQUENTIAL_MODES.get(mode, mode)
        self.layers = rotate_layers(self.paths, self.rotation)
        self.forward_weight = float(forward_weight)
        self.execution = execution
        self.chosen_execution: str | None = None
        self._run: InbetweenRun | None = None
        self._pins: tuple[torch.Tensor, torch.Tensor] | None = None
        self._needed = 0.0
        self.last_peak_map_bytes = 0
        self._warned_multigpu = False

    def set_conds(self, positive_start, negative_start, positive_end=None, negative_end=None):
        conds = {"positive": positive_start, "negative": negative_start}
        if positive_end is not None:
            conds["positive_end"] = positive_end
            conds["negative_end"] = negative_end
        self.inner_set_conds(conds)

    def check_sampler(self, sampler) -> None:
        if self.mode in SEQUENTIAL_MODES and not getattr(getattr(sampler, "sampler_function", None),
                                                         SEQUENTIAL_MARK, False):
            fail("SVDInbetweenGuider", "mode", f"{self.mode!r} denoises the two directions one after the other and "
                 "needs the SVDInbetweenViBiDSampler as SAMPLER; with other samplers pick gi, gi_no_finetune or trf")

    def begin_run(self) -> None:
        """Per-run state; `sample` calls it, a chain guider calls it for each segment."""
        self._run = InbetweenRun(rotate_layers=self.layers, finetuned=self.rotation == "gi")
        self.chosen_execution = None
        self._pins = None

    def end_run(self) -> None:
        if self._run is not None:
            self.last_peak_map_bytes = self._run.peak_map_bytes
            self._run.clear()
        self._run = None
        self._pins = None

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        self.check_sampler(sampler)
        self.begin_run()
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.end_run()

    def _execution_for(self, x: torch.Tensor) -> str:
        if self.chosen_execution is None:
            free = free_memory(self.model_patcher, x.device)
            estimates = execution_estimates(self.model_patcher, self.inner_model, x, self.layers)
            self.chosen_execution = choose_execution(self.execution, free, estimates)
            self._needed = needed_bytes(estimates[self.chosen_execution])
        return self.chosen_execution

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        request: DirectionRequest | None = model_options.get(DIRECTION_KEY)
        if request is None and self.mode in SEQUENTIAL_MODES:
            self.check_sampler(None)
        if request is not None and "positive_end" not in self.conds:
            raise RuntimeError("SVD inbetween: a one-direction request needs positive_end and negative_end")
        if request is None and ("positive_end" not in self.conds or self.forward_weight == 1.0):
            return super().predict_noise(x, timestep, model_options, seed)
        want_forward = request is None or request.direction == FORWARD
        want_backward = request is None or request.direction == BACKWARD
        out, conds = self._unet(x, timestep, model_options, want_forward, want_backward)

        frames = x.shape[0]
        flip = lambda t: flip_frames(t, frames)  # noqa: E731
        forward = backward = None
        if want_forward:
            forward, uncond = self._guide(out[FORWARD_COND], out[FORWARD_UNCOND], x, timestep, model_options,
                                          conds[FORWARD_COND], conds[FORWARD_UNCOND])
        if want_backward:
            backward, uncond = self._guide(flip(out[BACKWARD_COND]), flip(out[BACKWARD_UNCOND]), flip(x), timestep,
                                           model_options, conds[BACKWARD_COND], conds[BACKWARD_UNCOND])
            backward, uncond = flip(backward), flip(uncond)
        if request is None:
            return fuse(forward, backward, self.forward_weight)
        has_uncond = conds[FORWARD_UNCOND if want_forward else BACKWARD_UNCOND] is not None
        request.uncond = uncond if has_uncond else None
        start, end = self._keyframe_latents(x)
        request.pins = {frames - 1: end} if want_forward else {0: start}
        return forward if want_forward else backward

    def _unet(self, x, timestep, model_options, want_forward: bool, want_backward: bool):
        """UNet outputs (forward time) for the conds one step needs, and those conds."""
        run = self._run
        use_uncond = not (math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False))
        # Forward chunks also run for a backward-only call when they must supply rotated maps.
        run_forward = want_forward or bool(self.layers)
        conds = [None] * 4
        if want_backward:
            conds[BACKWARD_COND] = self.conds["positive_end"]
            conds[BACKWARD_UNCOND] = self.conds["negative_end"] if use_uncond else None
        if run_forward:
            conds[FORWARD_COND] = self.conds["positive"]
            conds[FORWARD_UNCOND] = self.conds["negative"] if use_uncond else None
        run.active = frozenset(i for i, c in enumerate(conds) if c is not None)

        opts = model_options.copy()
        if opts.pop(MULTIGPU_CLONES_KEY, None) is not None and not self._warned_multigpu:
            # A multi-GPU split would put a forward chunk and the backward chunk that consumes its
            # attention maps on different devices and threads; the dual-direction calls stay whole.
            log.warning("SVD inbetween: MultiGPU CFG Split is ignored for the forward/backward model calls; "
                        "they run on %s (each needs its partner's attention maps)", x.device)
            self._warned_multigpu = True
        topts = dict(opts.get("transformer_options", {}))
        topts[RUN_KEY] = run
        opts["transformer_options"] = topts
        execution = self._execution_for(x)
        opts["model_function_wrapper"] = direction_wrapper(x.shape[0], model_options.get("model_function_wrapper"),
                                                           chunked=execution == "lowvram")
        try:
            out = None
            for k, group in enumerate(call_groups(execution, sorted(run.active))):
                if k:
                    comfy.model_management.throw_exception_if_processing_interrupted()
                with calibrated_call(len(group) * x.shape[0], self._needed):  # not re-split by ComfyUI's estimate
                    part = comfy.samplers.calc_cond_batch(self.inner_model, [c if i in group else None for i, c in
                                                                             enumerate(conds)], x, timestep, opts)
                out = list(part) if out is None else [part[i] if i in group else o for i, o in enumerate(out)]
            if run.maps:
                raise RuntimeError(f"SVD inbetween: {len(run.maps)} attention maps were captured but never used")
        finally:
            run.clear()
        return out, conds

    def _keyframe_latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end keyframe latents in the model's latent space, from the conds' concat latents."""
        if self._pins is None:
            import comfy.utils
            pins = []
            for name in ("positive", "positive_end"):
                t = self.original_conds[name][0].get("concat_latent_image")
                if t is None:
                    raise RuntimeError(f"SVD inbetween: {name} has no concat_latent_image to pin the endpoints to")
                t = t[:1].to(device=x.device, dtype=x.dtype)
                if t.shape[-2:] != x.shape[-2:]:  # as SVD's extra_conds does for c_concat
                    t = comfy.utils.common_upscale(t, x.shape[-1], x.shape[-2], "bilinear", "center")
                pins.append(self.inner_model.process_latent_in(t))
            self._pins = (pins[0], pins[1])
        return self._pins

    def _guide(self, cond_pred, uncond_pred, x, timestep, model_options, cond, uncond):
        """Stock CFG (including any sampler_cfg_function on the model) in one direction's own time.

        Returns the guided x0 and the unconditional x0 it was guided from."""
        for fn in model_options.get("sampler_pre_cfg_function", []):
            cond_pred, uncond_pred = fn({"conds": [cond, uncond], "conds_out": [cond_pred, uncond_pred],
                                         "cond_scale": self.cfg, "timestep": timestep, "input": x, "sigma": timestep,
                                         "model": self.inner_model, "model_options": model_options})
        guided = comfy.samplers.cfg_function(self.inner_model, cond_pred, uncond_pred, self.cfg, x, timestep,
                                             model_options=model_options, cond=cond, uncond=uncond)
        return guided, uncond_pred


setattr(SVDInbetweenGuider, ANSWERS_MARK, True)


_INNER_SAMPLE_SIGNATURE = inspect.signature(comfy.samplers.CFGGuider.inner_sample)


class SVDInbetweenChainGuider(comfy.samplers.CFGGuider):
    """Segments of one chain latent, denoised in lockstep by their own SVDInbetweenGuiders.

    Segment k owns the window [start_k, stop_k) of the chain latent; neighbouring windows
    share their keyframe frame. Every model call runs each segment on its window and the
    shared frames get the mean of their two predictions (samplers.chain.fuse_windows), so
    both neighbours denoise the same boundary frame at every step. All segment guiders
    must wrap the same ModelPatcher (one model load for the whole chain).
    """

    def __init__(self, segments: list[SVDInbetweenGuider], windows: list[tuple[int, int]]):
        super().__init__(segments[0].model_patcher)
        if any(g.model_patcher is not self.model_patcher for g in segments) or len(segments) != len(windows):
            raise ValueError("chain segments must share one model patcher and have one window each")
        self.segments, self.windows = segments, windows
        self.original_conds = {f"{k}/{name}": c for k, g in enumerate(segments) for name, c in g.original_conds.items()}

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        import comfy.model_patcher
        import comfy.patcher_extension
        largest = max(stop - start for start, stop in self.windows)

        def load_for_one_segment(executor, model, noise_shape, *args, **kwargs):
            # A UNet call holds one segment, not the chain: reserve memory for that.
            return executor(model, torch.Size([largest, *noise_shape[1:]]), *args, **kwargs)

        for g, (start, stop) in zip(self.segments, self.windows):
            g.check_sampler(sampler)
            g.begin_run()
        own_options = self.model_options
        self.model_options = comfy.model_patcher.create_model_options_clone(own_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING,
                                                     "svd_inbetween_chain", load_for_one_segment, self.model_options,
                                                     is_model_options=True)
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = own_options
            for g in self.segments:
                g.end_run()
                for attr in ("conds", "inner_model"):
                    g.__dict__.pop(attr, None)

    def inner_sample(self, *args, **kwargs):
        # The host's CFGGuider.inner_sample processes self.conds against the whole noise; SVD's
        # extra_conds take the video length from that noise, so each segment's conds are processed
        # here against its own window first and the host then runs with nothing left to process.
        bound = _INNER_SAMPLE_SIGNATURE.bind(self, *args, **kwargs).arguments
        noise, latent_image, device = bound["noise"], bound["latent_image"], bound["device"]
        denoise_mask, seed = bound["denoise_mask"], bound["seed"]
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        processed = {}
        for k, (g, (start, stop)) in enumerate(zip(self.segments, self.windows)):
            own = {name: self.conds[f"{k}/{name}"] for name in g.original_conds}
            mask = denoise_mask[start:stop] if denoise_mask is not None else None
            g.inner_model = self.inner_model
            g.conds = comfy.samplers.process_conds(self.inner_model, noise[start:stop], own, device,
                                                   latent_image[start:stop], mask, seed)
            processed.update({f"{k}/{name}": c for name, c in g.conds.items()})
        self.conds = {}
        try:
            return super().inner_sample(*args, **kwargs)
        finally:
            self.conds = processed

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        from .chain import fuse_windows
        request: DirectionRequest | None = model_options.get(DIRECTION_KEY)
        preds, unconds, pins = [], [], {}
        for i, (g, (start, stop)) in enumerate(zip(self.segments, self.windows)):
            if i:
                comfy.model_management.throw_exception_if_processing_interrupted()
            opts, sub = model_options, None
            if request is not None:
                sub = DirectionRequest(request.direction)
                opts = {**model_options, DIRECTION_KEY: sub}
            t = timestep[start:stop] if torch.is_tensor(timestep) and timestep.ndim and timestep.shape[0] == x.shape[0] \
                else timestep
            preds.append(g.predict_noise(x[start:stop], t, opts, seed))
            if sub is not None:
                unconds.append(sub.uncond)
                pins.update({start + f: lat for f, lat in sub.pins.items()})
        if request is not None:
            request.uncond = None if any(u is None for u in unconds) else fuse_windows(unconds, self.windows)
            request.pins = pins
        return fuse_windows(preds, self.windows)


setattr(SVDInbetweenChainGuider, ANSWERS_MARK, True)
