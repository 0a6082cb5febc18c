"""Finding the 16 temporal self-attentions of ComfyUI's SVD UNet and patching them."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from .chunking import FrameChunked, is_chunked_wrapper, spatial_resblock_layer_paths
from .feedforward import PerVideoFeedForward, feedforward_paths, is_feedforward_wrapper
from .memory import MEMORY_REQUIRED, CalibratedMemoryRequired, is_calibrated
from .proxy import TemporalAttentionProxy, is_proxy

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

PREFIX = "diffusion_model."
TEMPORAL_ATTN1 = re.compile(r"^(input_blocks|middle_block|output_blocks)\.[\d.]*time_stack\.\d+\.attn1$")
SVD_LAYER_COUNT = 16


class NotSVDModelError(ValueError):
    pass


def temporal_attn1_paths(model_patcher: ModelPatcher) -> list[str]:
    """Module paths (relative to diffusion_model) of the temporal attn1 layers, in model order."""
    unet = model_patcher.model.diffusion_model
    paths = [name for name, _ in unet.named_modules() if TEMPORAL_ATTN1.match(name)]
    if len(paths) != SVD_LAYER_COUNT:
        raise NotSVDModelError(
            f"expected {SVD_LAYER_COUNT} temporal self-attention layers (time_stack.*.attn1) in an SVD UNet, "
            f"found {len(paths)}; connect an SVD img2vid model (e.g. from ImageOnlyCheckpointLoader)")
    return paths


def original_module(model_patcher: ModelPatcher, path: str) -> torch.nn.Module:
    """The unpatched CrossAttention at `path`, whatever patches are currently applied."""
    mod = model_patcher.get_model_object(PREFIX + path)
    return mod.original if is_proxy(mod) else mod


def proxies(model_patcher: ModelPatcher) -> dict[str, TemporalAttentionProxy | None]:
    """The proxy this patcher installs on each layer (None where it has none)."""
    out = {}
    for path in temporal_attn1_paths(model_patcher):
        obj = model_patcher.object_patches.get(PREFIX + path)
        out[path] = obj if is_proxy(obj) else None
    return out


def rotate_layers(paths: list[str], mode: str) -> frozenset[str]:
    if mode == "gi":
        return frozenset(paths)
    if mode == "gi_no_finetune":
        return frozenset(p for p in paths if p.startswith("output_blocks."))
    if mode == "trf":
        return frozenset()
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def with_proxies(model_patcher: ModelPatcher,
                 backward: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> ModelPatcher:
    """A clone whose 16 temporal attn1 layers carry proxies, whose feed-forwards run per video,
    whose spatial res-block layers can run per frame (chunking.FrameChunked, lowvram only) and
    whose memory_required answers the guider's calls with the pack's estimate (memory.py).

    With `backward` (path -> (W_v', W_o') absolute tensors) the proxies hold those
    weights; without it, layers that already carry a proxy keep it and the rest
    get a weightless proxy. Both kinds of patch pass through outside an inbetween call.
    """
    m = model_patcher.clone()
    for path in feedforward_paths(m.model.diffusion_model):
        if not is_feedforward_wrapper(m.object_patches.get(PREFIX + path)):
            ff = m.get_model_object(PREFIX + path)
            m.add_object_patch(PREFIX + path, PerVideoFeedForward(ff.original if is_feedforward_wrapper(ff) else ff))
    for path in spatial_resblock_layer_paths(m.model.diffusion_model):
        if not is_chunked_wrapper(m.object_patches.get(PREFIX + path)):
            seq = m.get_model_object(PREFIX + path)
            m.add_object_patch(PREFIX + path, FrameChunked(seq.original if is_chunked_wrapper(seq) else seq))
    if not is_calibrated(m.object_patches.get(MEMORY_REQUIRED)):
        m.add_object_patch(MEMORY_REQUIRED, CalibratedMemoryRequired(m.get_model_object(MEMORY_REQUIRED)))
    existing = proxies(m)
    for path, proxy in existing.items():
        if backward is None and proxy is not None:
            continue
        wv, wo = backward[path] if backward is not None else (None, None)
        m.add_object_patch(PREFIX + path, TemporalAttentionProxy(original_module(m, path), path, wv, wo))
    return m


def has_backward_weights(model_patcher: ModelPatcher) -> bool:
    found = proxies(model_patcher)
    return all(p is not None and p.has_backward_weights for p in found.values())


# model_options key: why a backward-weights loader passed the model on without weights (its file is missing)
MISSING_WEIGHTS = "svd_inbetween_missing_backward_weights"


def without_backward_weights(model_patcher: ModelPatcher, why: str) -> ModelPatcher:
    """A clone that remembers why it has no backward weights, for the error of a mode that needs them."""
    m = model_patcher.clone()
    m.model_options[MISSING_WEIGHTS] = why
    return m


def missing_backward_weights(model_patcher: ModelPatcher) -> str | None:
    return None if has_backward_weights(model_patcher) else model_patcher.model_options.get(MISSING_WEIGHTS)
