"""Putting backward weights from a file onto a model clone."""
from __future__ import annotations

import logging
import os

import torch

from ..attention_patch.layers import original_module, temporal_attn1_paths, with_proxies
from .cache import MEMORY, Loaded, file_identity, read_saved, save_delta, saved_is_current
from .convert import SAME_BASE_TOLERANCE, BaseCheckpointError, delta_from_base
from .format import FORMAT, BackwardWeightsError, key_out, key_v, read_backward_weights, resolve
from .keymap import SUFFIXES, Layer, file_key, layers_from_comfy_config
from .source import LazyTensors, find_weights_file, locate_layers, read_layers, relative_difference, untrained_tensor

log = logging.getLogger(__name__)


def model_base_weights(model_patcher) -> dict:
    """layer path -> the model's own (W_v, W_o) of each temporal attn1.

    While some clone of this model is loaded with weight patches (a LoRA), the live
    tensors hold patched values; ComfyUI keeps the originals in the backup shared by
    all clones, so read those when present.
    """
    out = {}
    for path in temporal_attn1_paths(model_patcher):
        mod = original_module(model_patcher, path)
        pair = []
        for key, live in ((key_v(path), mod.to_v.weight), (key_out(path), mod.to_out[0].weight)):
            saved = model_patcher.backup.get(key)
            pair.append(saved.weight if saved is not None else live)
        out[path] = tuple(pair)
    return out


def model_layers(model_patcher) -> list[Layer]:
    """The model's 16 layers with their diffusers names, derived from its unet_config."""
    paths = temporal_attn1_paths(model_patcher)
    layers = layers_from_comfy_config(model_patcher.model.model_config.unet_config)
    if [layer.comfy for layer in layers] != paths:
        raise BackwardWeightsError("the model's temporal attention layers do not follow the SVD block structure "
                                   f"(found {paths[:2]}..., derived {[la.comfy for la in layers[:2]]}...)")
    return layers


def read_file(src: LazyTensors, layers: list[Layer], base: str | None = None,
              option: str = "base_checkpoint") -> Loaded:
    """Compact tensors from a compact file or a full UNet (official release), uncached.

    A full UNet gives absolute weights (only its 32 tensors are read), or with `base` the
    authors' transplant: the delta W' - W_base, as `svd-inbetween convert --base` writes it.
    """
    if src.metadata.get("format") == FORMAT:
        if base is not None:
            raise BaseCheckpointError(
                f"{src.name} is already in the pack's compact format (kind {src.metadata.get('kind')}) and is used "
                f"as it is; {option} only applies to the official release's full UNet file: set {option} to none")
        tensors, meta = read_backward_weights(src.file)
        return Loaded(tensors, meta)
    scheme, layers = locate_layers(src, layers)
    pairs = read_layers(src, scheme, layers)
    meta = {"kind": "absolute", "source": src.name, "source_format": scheme}
    warnings: tuple[str, ...] = ()
    if base is not None:
        delta = delta_from_base(src, scheme, layers, pairs, base, option)
        pairs, warnings = delta.weights, tuple(delta.warnings)
        meta.update(delta.metadata, kind="delta")
    tensors, origin = {}, {}
    for layer in layers:
        for key, suffix, t in ((key_v(layer.comfy), SUFFIXES[0], pairs[layer.comfy][0]),
                               (key_out(layer.comfy), SUFFIXES[1], pairs[layer.comfy][1])):
            tensors[key] = t
            origin[key] = file_key(scheme, layer, suffix)
    return Loaded(tensors, meta, origin, warnings)


def read_cached(file: str, layers: list[Layer], base: str | None = None, saved: str | None = None,
                save: bool = False, option: str = "base_checkpoint") -> Loaded:
    """read_file through the in-memory cache; with `base`, also through a saved compact delta at `saved`.

    save: write the transplant to `saved` when it had to be computed from the large files.
    """
    src = LazyTensors(file)  # headers only
    sources = sorted({src.file, *src.where.values()})
    if base is not None:
        try:
            base = find_weights_file(base)
        except BackwardWeightsError as e:
            raise BaseCheckpointError(str(e)) from None
    key = (tuple(file_identity(f) for f in sources), base and file_identity(base), tuple(layers))
    hit = MEMORY.get(key)
    if hit is None and base is not None and saved:
        hit = read_saved(saved, sources, base)
        if hit is not None:
            log.info("%s: transplant read from the saved %s", src.name, os.path.basename(saved))
    if hit is not None:
        for message in hit.warnings:
            log.warning("%s", message)
    else:
        hit = read_file(src, layers, base, option)
    if save and base is not None and saved and not saved_is_current(saved, sources, base):
        save_delta(saved, hit, sources, base)
    MEMORY.put(key, hit)
    return hit


def read_any(file: str, layers: list[Layer], model_patcher=None, base: str | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Compact tensors, metadata and origin names of a weights file (cached); see read_file.

    With `model_patcher` and no base, a warning says when a full UNet was fine-tuned from another model.
    """
    loaded = read_cached(file, layers, base)
    if model_patcher is not None and base is None and loaded.meta.get("format") != FORMAT:
        _warn_if_other_base(model_patcher, LazyTensors(file), loaded.meta["source_format"], layers)
    return loaded.tensors, loaded.meta, loaded.origin


def _warn_if_other_base(model, src: LazyTensors, scheme: str, layers: list[Layer]) -> None:
    theirs = untrained_tensor(src, scheme, layers[0])
    if theirs is None:
        return
    ours = original_module(model, layers[0].comfy).to_q.weight.detach().cpu()
    diff = relative_difference(ours, theirs)
    if diff > SAME_BASE_TOLERANCE:
        log.warning("%s: absolute weights fine-tuned from a different SVD than this model (to_q differs by %.3g); "
                    "the authors transplant a delta instead: pick the model they were trained from "
                    "(svd.safetensors, 14-frame SVD) as base_checkpoint in SVD Inbetween Load Backward Weights, "
                    "or convert once with `svd-inbetween convert %s -o OUT --base svd.safetensors`",
                    src.name, diff, src.name)


def load_backward(model_patcher, file: str, strength: float = 1.0, base: str | None = None,
                  saved: str | None = None, save: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """layer path -> absolute (W_v', W_o') for this model, validated against its shapes.

    base: the checkpoint the (official, full-UNet) weights were fine-tuned from; then the
    model gets W + strength * (W' - W_base), the authors' transplant. saved/save: see read_cached.
    """
    layers = model_layers(model_patcher)
    if base is None:
        tensors, meta, origin = read_any(file, layers, model_patcher)
    else:
        loaded = read_cached(file, layers, base, saved, save)
        tensors, meta, origin = loaded.tensors, loaded.meta, loaded.origin
    log.info("%s: %s backward weights (%s)", os.path.basename(file), meta["kind"], meta.get("source_format", FORMAT))
    return resolve(file, tensors, meta["kind"], model_base_weights(model_patcher), strength, origin)


def apply_backward_weights(model_patcher, file: str, strength: float = 1.0, base: str | None = None,
                           saved: str | None = None, save: bool = False):
    """A clone of the model whose proxies carry the file's W_v'/W_o' (validated against it)."""
    return with_proxies(model_patcher, load_backward(model_patcher, file, strength, base, saved, save))
