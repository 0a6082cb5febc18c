"""Input checks that run before any sampling.

Checks raise InbetweenInputError naming the input; the facade (samplers/run.py,
samplers/chain.py) or the node labels it with the node once (`labelled`), so a
message reads "SVDInbetweenSampler: input 'steps': must be >= 1, got 0".
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..attention_patch.layers import (NotSVDModelError, has_backward_weights, missing_backward_weights,
                                     temporal_attn1_paths)
from ..attention_patch.modes import MODES, mode_of
from ..conditioning.keyframes import FRAMES_KEY
from .schedule import repeats_per_step

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

MIN_FRAMES = 3


class InbetweenInputError(ValueError):
    """A bad node input: which input, what is wrong and the fix; `node` is filled in by `labelled`."""

    def __init__(self, input_name: str, message: str, node: str | None = None):
        super().__init__(input_name, message)
        self.input_name, self.message, self.node = input_name, message, node

    def __str__(self) -> str:
        where = f"input '{self.input_name}': {self.message}"
        return f"{self.node}: {where}" if self.node else where


def fail(name: str, message: str, node: str | None = None):
    raise InbetweenInputError(name, message, node)


@contextlib.contextmanager
def labelled(node: str) -> Iterator[None]:
    """Input errors raised inside name `node` (unless a check already named another node)."""
    try:
        yield
    except InbetweenInputError as e:
        if e.node is None:
            e.node = node
        raise


def check_choice(name: str, value, options) -> None:
    """V3 COMBO values are not checked against their options by ComfyUI 0.3.64's validation."""
    if value not in options:
        fail(name, f"must be one of {', '.join(map(str, options))}, got {value!r}")


def check_model(model: ModelPatcher, mode: str) -> None:
    import comfy.model_base

    check_choice("mode", mode, MODES)
    spec = mode_of(mode)
    if not isinstance(getattr(model, "model", None), comfy.model_base.SVD_img2vid):
        fail("model", f"expected a Stable Video Diffusion img2vid model, got "
             f"{type(getattr(model, 'model', model)).__name__}; load SVD with ImageOnlyCheckpointLoader")
    replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1")
    if replaced and spec.rotation != "none":
        fail("model", "carries attn1 replace patches (from another node); in ComfyUI they also replace the "
             "temporal self-attention, which would silently skip the rotated maps: remove them for this mode")
    try:
        temporal_attn1_paths(model)
    except NotSVDModelError as e:
        fail("model", str(e))
    if spec.finetuned and not has_backward_weights(model):
        instead = {"vibid": "'vibid'", "mpd": "'mpd' or 'mpd_trf'"}.get(spec.sampler, "'gi_no_finetune' or 'trf'")
        missing = missing_backward_weights(model)
        if missing:
            fail("model", f"mode {mode!r} needs backward-motion weights, and SVDInbetweenLoadBackwardWeights' input "
                 f"'weights' {missing}: put the file there and refresh (README: Backward-motion weights), or pick "
                 f"mode {instead}, which needs none")
        fail("model", f"mode {mode!r} needs backward-motion weights: put SVDInbetweenLoadBackwardWeights "
             f"before this node, or pick mode {instead}")


def check_forward_weight(forward_weight: float) -> None:
    if not 0.0 <= forward_weight <= 1.0:
        fail("forward_weight", f"must be in [0, 1], got {forward_weight}")


def check_recurrence(recurrence: int, recurrence_ratio: float) -> None:
    try:
        repeats_per_step(1, recurrence, recurrence_ratio)
    except ValueError as e:
        fail("recurrence", str(e))


def check_distillation(prefix: str, fraction: float, iterations: int, repeats: int | None = None) -> None:
    """An MPD loop's constants; `prefix` names the inputs (e.g. 'mpd_' -> 'mpd_distill_fraction')."""
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        fail(f"{prefix}distill_fraction", f"must be a number in [0, 1] (the share of the steps that distil; the "
             f"authors use 0.2 for mpd, 0.1 for mpd_trf), got {fraction!r}")
    if not isinstance(iterations, int) or iterations < 1:
        fail(f"{prefix}distill_iterations", f"must be a whole number >= 1, got {iterations!r}; to sample without "
             f"distillation set {prefix}distill_fraction to 0")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 0):
        fail(f"{prefix}repeats", f"must be a whole number >= 0 (re-noised fused passes before each later step's "
             f"final one; the authors use 3), got {repeats!r}")


def check_distillations(mpd, mpd_trf) -> None:
    """Both MPD loops' constants (settings.Distillation), named as the MPD SAMPLER's inputs."""
    check_distillation("mpd_", mpd.fraction, mpd.iterations)
    check_distillation("mpd_trf_", mpd_trf.fraction, mpd_trf.iterations, mpd_trf.repeats)


def check_steps(steps: int) -> None:
    if steps < 1:
        fail("steps", f"must be >= 1, got {steps}")


def check_images(images: torch.Tensor) -> None:
    """A chain's keyframes: one IMAGE batch of at least two finite images."""
    if not torch.is_tensor(images) or images.ndim != 4:
        fail("images", "expected an IMAGE batch of keyframes")
    if images.shape[0] < 2:
        fail("images", f"got {images.shape[0]} image; a chain needs at least 2 keyframes (connect them to "
             "image_1, image_2, ... or give one IMAGE batch; a loop is A, B, A)")
    if not torch.isfinite(images).all():
        fail("images", "contains NaN or Inf")


def check_conds_fit_model(model: ModelPatcher, conds: dict[str, list]) -> None:
    """The conds' image embeddings must be as wide as the model's cross-attention context."""
    context = model.model.model_config.unet_config.get("context_dim")
    for name, cond in conds.items():
        width = cond[0][0].shape[-1]
        if context is not None and width != context:
            fail(name, f"image embedding is {width} wide but the model expects {context}: the conditioning "
                 "was made with another model's CLIP vision; use the same checkpoint's CLIP vision")


def _first(name: str, cond):
    if not cond or not isinstance(cond, list) or len(cond[0]) != 2:
        fail(name, "empty or malformed CONDITIONING; use SVDInbetweenConditioning or SVD_img2vid_Conditioning")
    if len(cond) != 1:
        fail(name, f"has {len(cond)} entries (combined or concatenated conditioning); the backward pass pairs "
             "one start entry with one end entry: connect the conditioning node's output directly")
    tensor, extra = cond[0]
    unsupported = [k for k in ("area", "mask", "hooks", "control", "gligen") if extra.get(k) is not None]
    if extra.get("start_percent", 0.0) != 0.0 or extra.get("end_percent", 1.0) != 1.0:
        unsupported.append("timestep range")
    if unsupported:
        fail(name, f"carries {', '.join(unsupported)}; the dual-direction sampler needs plain SVD "
             "conditioning that applies to every frame at every step")
    if "concat_latent_image" not in extra:
        fail(name, "not SVD conditioning (no concat_latent_image); use SVDInbetweenConditioning "
             "or SVD_img2vid_Conditioning")
    for t in (tensor, extra["concat_latent_image"]):
        if torch.is_tensor(t) and not torch.isfinite(t).all():
            fail(name, "contains NaN or Inf")
    return extra


def check_inputs(conds: dict[str, list], latent: torch.Tensor | None, cfg: float | None = None) -> None:
    """conds: input name -> CONDITIONING. Checks sizes, frame counts, NaNs and ranges."""
    extras = {name: _first(name, c) for name, c in conds.items()}
    names = list(extras)
    ref_name = names[0]
    ref = extras[ref_name]["concat_latent_image"].shape[-2:]
    for name in names[1:]:
        shape = extras[name]["concat_latent_image"].shape[-2:]
        if shape != ref:
            fail(name, f"conditioning is {shape[-1] * 8}x{shape[-2] * 8} but {ref_name} is "
                 f"{ref[-1] * 8}x{ref[-2] * 8}; encode both keyframes at the same width and height")
    for name in names[1:]:
        width, ref_width = conds[name][0][0].shape[-1], conds[ref_name][0][0].shape[-1]
        channels = extras[name]["concat_latent_image"].shape[1]
        ref_channels = extras[ref_name]["concat_latent_image"].shape[1]
        if (width, channels) != (ref_width, ref_channels):
            fail(name, f"conditioning has a {width}-wide image embedding and {channels} latent channels, "
                 f"{ref_name} has {ref_width} and {ref_channels}: they come from different models; encode both "
                 "keyframes with the same checkpoint's CLIP vision and VAE")
    frames = {name: e[FRAMES_KEY] for name, e in extras.items() if FRAMES_KEY in e}
    if len(set(frames.values())) > 1:
        fail(names[-1], f"conditionings were made for different frame counts {frames}; use one video_frames")
    if latent is not None:
        if not torch.isfinite(latent).all():
            fail("latent_image", "contains NaN or Inf")
        if latent.shape[0] < MIN_FRAMES:
            fail("latent_image", f"has {latent.shape[0]} frames; inbetweening needs at least {MIN_FRAMES}")
        if latent.shape[-2:] != ref:
            fail("latent_image", f"is {latent.shape[-1] * 8}x{latent.shape[-2] * 8} but the conditioning is "
                 f"{ref[-1] * 8}x{ref[-2] * 8}; use the latent from the same conditioning node")
        for name, n in frames.items():
            if n != latent.shape[0]:
                fail("latent_image", f"has {latent.shape[0]} frames but {name} was made for {n}")
    if cfg is not None and not math.isfinite(cfg):
        fail("cfg", "must be a finite number")
