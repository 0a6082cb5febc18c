"""The dual-direction GUIDER: forward from the start frame, backward from the end frame, fused.

Per step the guider lays out the conds of both directions (attention_patch/run_state.py),
runs them in the UNet calls its execution prescribes (samplers/execution.py), guides each
direction with stock CFG in its own time and fuses them (or answers a one-direction
request, samplers/protocol.py). Backward chunks see the time-flipped latent through an
APPLY_MODEL wrapper, so calc_cond_batch can feed the same x to all four conds.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math

import torch

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import comfy.utils

from ..attention_patch.chunking import low_memory
from ..attention_patch.feedforward import per_video_feedforward
from ..attention_patch.layers import temporal_attn1_paths
from ..attention_patch.memory import calibrated_call
from ..attention_patch.modes import mode_of, rotate_layers
from ..attention_patch.rotation import flip_frames
from ..attention_patch.run_state import (BACKWARD_COND, BACKWARD_UNCOND, FORWARD_COND, FORWARD_UNCOND, RUN_KEY,
                                         InbetweenRun, is_backward)
from ..conditioning.keyframes import CLEAN_LATENT_KEY
from .execution import EXECUTIONS, call_groups, choose_execution, execution_estimates, free_memory, needed_bytes
from .fusion import frame_ramp, fuse
from .protocol import (ANSWERS_MARK, BACKWARD, DIRECTION_KEY, DISTILLED, FORWARD, FUSED, REQUESTS, DirectionRequest,
                       sampler_kind)
from .steps import distilled_x0
from .request import check_call_fits
from .validation import fail, labelled

log = logging.getLogger(__name__)

# model_options key under which ComfyUI 0.33+ (MultiGPU CFG Split) hands calc_cond_batch its
# per-device model clones; without it calc_cond_batch runs every cond on the main device.
MULTIGPU_CLONES_KEY = "multigpu_clones"
# Our APPLY_MODEL wrapper's key in transformer_options["wrappers"].
WRAPPER_KEY = "svd_inbetween_directions"
_APPLY_MODEL_SIGNATURE = inspect.signature(comfy.model_base.BaseModel.apply_model)


def _flip_chunks(t: torch.Tensor, backward: list[bool], frames: int) -> torch.Tensor:
    """Reverse time in the chunks marked backward; the batch holds one chunk per flag."""
    chunks = t.chunk(len(backward))
    return torch.cat([flip_frames(c, frames) if b else c for c, b in zip(chunks, backward)])


def direction_wrapper(frames: int, chunked: bool = False):
    """APPLY_MODEL wrapper: backward chunks see flip(x) and flipped per-frame conds, and their
    outputs are flipped back; feed-forwards run per video (and, chunked, the lowvram pieces)."""
    def wrapper(executor, x, t, *args, **kwargs):
        topts = _APPLY_MODEL_SIGNATURE.bind(None, x, t, *args, **kwargs).arguments.get("transformer_options", {})
        chunk_ids = topts["cond_or_uncond"]
        backward = [is_backward(c) for c in chunk_ids]
        batch = x.shape[0]
        flip = lambda v: _flip_chunks(v, backward, frames) if torch.is_tensor(v) and v.ndim > 0 \
            and v.shape[0] == batch else v  # noqa: E731
        if any(backward):
            if batch != frames * len(chunk_ids):
                raise RuntimeError(f"SVD inbetween: expected {len(chunk_ids)} chunks of {frames} frames, got a batch of {batch}")
            x, args, kwargs = flip(x), [flip(a) for a in args], {k: flip(v) for k, v in kwargs.items()}
        with per_video_feedforward(len(chunk_ids)), low_memory() if chunked else contextlib.nullcontext():
            out = executor(x, t, *args, **kwargs)
        return _flip_chunks(out, backward, frames) if any(backward) else out
    return wrapper


# The guider's cond of each chunk index (attention_patch/run_state.py lays them out).
COND_NAMES = {BACKWARD_UNCOND: "negative_end", BACKWARD_COND: "positive_end", FORWARD_UNCOND: "negative",
              FORWARD_COND: "positive"}


def request_chunks(direction: str, rotating: bool, use_uncond: bool, plain_cfg1: bool,
                   requested: bool) -> tuple[int, ...]:
    """The chunks (cond indices) the UNet runs for one prediction: `direction` is a request's, FUSED
    for the fused prediction; use_uncond: the unconditional chunks run (cfg != 1 or CFG++ asks);
    plain_cfg1: cfg is 1 and no CFG function on the model reads the unconditional prediction.

    Forward chunks also run for a backward-only request when they must supply rotated maps. A fused
    request's CFG++ follows the forward path's uncond, so with plain_cfg1 the backward uncond is skipped."""
    want_forward, want_backward = direction != BACKWARD, direction in (BACKWARD, FUSED)
    chunks = []
    if want_backward:
        chunks.append(BACKWARD_COND)
        if use_uncond and not (requested and direction == FUSED and plain_cfg1):
            chunks.append(BACKWARD_UNCOND)
    if want_forward or rotating:
        chunks.append(FORWARD_COND)
        if use_uncond:
            chunks.append(FORWARD_UNCOND)
    return tuple(sorted(chunks))


class SVDInbetweenGuider(comfy.samplers.CFGGuider):
    """CFGGuider with four conds: forward (start frame) and backward (end frame) pairs.

    Each step returns w * forward + (1 - w) * flip(backward(flip(x))), both guided with
    their own CFG in their own time direction. Fusing denoised predictions at the same
    x and sigma equals fusing v-predictions (denoised is affine in v).

    A sampler may instead ask for one direction per call, the distilled backward x0 or the
    fused x0 with the forward unconditional x0 (a DirectionRequest in model_options, see
    samplers/protocol.py). A backward-only call in a rotating mode still runs the forward
    chunks on the same x, in the same call when batched, because the backward chunks consume
    their attention maps; their outputs are dropped.
    """

    def __init__(self, model_patcher, mode: str = "gi", forward_weight: float = 0.5, execution: str = "auto",
                 node: str | None = None):
        super().__init__(model_patcher)
        self.node = node  # the node that made this guider, named in the sample-time check below
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.mode = mode_of(mode)
        self.layers = rotate_layers(temporal_attn1_paths(model_patcher), self.mode)
        self.forward_weight = float(forward_weight)
        self.execution = execution
        self.chosen_execution: str | None = None
        self._run: InbetweenRun | None = None
        self._pins: tuple[torch.Tensor, torch.Tensor] | None = None
        self._needed = 0.0
        self._warned_multigpu = False
        self._warned_augmented_pins = False

    def set_conds(self, positive_start, negative_start, positive_end=None, negative_end=None):
        conds = {"positive": positive_start, "negative": negative_start}
        if positive_end is not None:
            conds["positive_end"] = positive_end
            conds["negative_end"] = negative_end
        self.inner_set_conds(conds)

    def check_sampler(self, sampler) -> None:
        """The mode's schedule needs its pack SAMPLER, and the MPD SAMPLER needs an MPD mode."""
        need, got = self.mode.sampler, sampler_kind(sampler)
        if need == "vibid" and got != "vibid":
            fail("mode", f"{self.mode.name!r} denoises the two directions one after the other and needs the "
                 "SVDInbetweenViBiDSampler as SAMPLER; with other samplers pick gi, gi_no_finetune or trf",
                 node=self.node)
        if need == "mpd" and got != "mpd":
            fail("mode", f"{self.mode.name!r} is Motion Prior Distillation and needs the SVDInbetweenMPDSampler as "
                 "SAMPLER; with other samplers pick gi, gi_no_finetune or trf", node=self.node)
        if got == "mpd" and need != "mpd":
            fail("mode", f"the SVDInbetweenMPDSampler needs a guider in mode mpd, mpd_trf or mpd_gi, got "
                 f"{self.mode.name!r}; pick one of them in this guider", node=self.node)

    def begin_run(self) -> None:
        """Per-run state; `sample` calls it, a chain guider calls it for each segment."""
        self._run = InbetweenRun(rotate_layers=self.layers, finetuned=self.mode.finetuned)
        self.chosen_execution = None
        self._pins = None

    def end_run(self) -> None:
        if self._run is not None:
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
            with labelled(self.node):  # before the first model call: a video no execution fits is refused
                check_call_fits(min(needed_bytes(e) for e in estimates.values()), x, x.device)
            self.chosen_execution = choose_execution(self.execution, free, estimates)
            self._needed = needed_bytes(estimates[self.chosen_execution])
        return self.chosen_execution

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        request: DirectionRequest | None = model_options.get(DIRECTION_KEY)
        if request is None and self.mode.sampler is not None:
            self.check_sampler(None)
        if request is not None and "positive_end" not in self.conds:
            raise RuntimeError("SVD inbetween: a direction request needs positive_end and negative_end")
        if request is not None and request.direction not in REQUESTS:
            raise RuntimeError(f"SVD inbetween: unknown direction request {request.direction!r}")
        if request is None and ("positive_end" not in self.conds or self.forward_weight == 1.0):
            return super().predict_noise(x, timestep, model_options, seed)
        direction = request.direction if request is not None else FUSED
        want_forward, want_backward = direction != BACKWARD, direction in (BACKWARD, FUSED)
        use_uncond = not (math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False))
        plain_cfg1 = math.isclose(self.cfg, 1.0) and not any(
            model_options.get(k) for k in ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function"))
        chunks = request_chunks(direction, bool(self.layers), use_uncond, plain_cfg1, request is not None)
        out, conds = self._unet(x, timestep, model_options, chunks)

        frames = x.shape[0]
        flip = lambda t: flip_frames(t, frames)  # noqa: E731
        forward = backward = None
        if want_forward:
            forward, uncond = self._guide(out[FORWARD_COND], out[FORWARD_UNCOND], x, timestep, model_options,
                                          conds[FORWARD_COND], conds[FORWARD_UNCOND])
            forward_uncond = uncond
        if want_backward:
            backward, uncond = self._guide(flip(out[BACKWARD_COND]), flip(out[BACKWARD_UNCOND]), flip(x), timestep,
                                           model_options, conds[BACKWARD_COND], conds[BACKWARD_UNCOND])
            backward, uncond = flip(backward), flip(uncond)
        weight = frame_ramp(frames, x) if self.mode.ramp_fusion else self.forward_weight
        if request is None:
            return fuse(forward, backward, weight)
        has_uncond = conds[BACKWARD_UNCOND if direction == BACKWARD else FORWARD_UNCOND] is not None
        start, end = self._keyframe_latents(x)
        if direction == FORWARD:
            request.pins, result = {frames - 1: end}, forward
        elif direction == BACKWARD:
            request.pins, result = {0: start}, backward
        elif direction == DISTILLED:
            request.pins, result = {0: start}, distilled_x0(x, forward, timestep, end)
        else:
            request.pins, result, uncond = {}, fuse(forward, backward, weight), forward_uncond
        request.uncond = uncond if has_uncond else None
        return result

    def _unet(self, x, timestep, model_options, chunks: tuple[int, ...]):
        """UNet outputs (forward time) for the conds of `chunks` (request_chunks), and those conds."""
        run = self._run
        conds = [self.conds[COND_NAMES[i]] if i in chunks else None for i in range(4)]
        run.active = frozenset(i for i, c in enumerate(conds) if c is not None)

        opts = comfy.model_patcher.create_model_options_clone(model_options)
        if opts.pop(MULTIGPU_CLONES_KEY, None) is not None and not self._warned_multigpu:
            # A multi-GPU split would put a forward chunk and the backward chunk that consumes its
            # attention maps on different devices and threads; the dual-direction calls stay whole.
            log.warning("SVD inbetween: MultiGPU CFG Split is ignored for the forward/backward model calls; "
                        "they run on %s (each needs its partner's attention maps)", x.device)
            self._warned_multigpu = True
        opts.setdefault("transformer_options", {})[RUN_KEY] = run
        execution = self._execution_for(x)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY,
                                                     direction_wrapper(x.shape[0], chunked=execution == "lowvram"),
                                                     opts, is_model_options=True)
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
        """Start and end keyframe latents in the model's latent space: the clean keyframe latents
        SVDInbetweenConditioning stores; for conds without them (stock SVD_img2vid_Conditioning) the
        concat latent, which is the keyframe plus its augmentation noise."""
        if self._pins is None:
            pins = []
            for name in ("positive", "positive_end"):
                extra = self.original_conds[name][0]
                t = extra.get(CLEAN_LATENT_KEY)
                if t is None:
                    t = extra.get("concat_latent_image")
                    if t is None:
                        raise RuntimeError(f"SVD inbetween: {name} has no concat_latent_image to pin the endpoints to")
                    self._warn_augmented_pins(name, extra.get("augmentation_level", 0.0))
                t = t[:1].to(device=x.device, dtype=x.dtype)
                if t.shape[-2:] != x.shape[-2:]:  # as SVD's extra_conds does for c_concat
                    t = comfy.utils.common_upscale(t, x.shape[-1], x.shape[-2], "bilinear", "center")
                pins.append(self.inner_model.process_latent_in(t))
            self._pins = (pins[0], pins[1])
        return self._pins

    def _warn_augmented_pins(self, name: str, level) -> None:
        if level and not self._warned_augmented_pins:
            log.warning("SVD inbetween: %s carries no clean keyframe latent (stock SVD_img2vid_Conditioning?), so "
                        "DDS pins the end frames to its noise-augmented keyframe (augmentation_level %s); "
                        "SVDInbetweenConditioning pins the clean keyframe", name, level)
            self._warned_augmented_pins = True

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
