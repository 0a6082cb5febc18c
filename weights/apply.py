"""Putting backward weights from a file onto a model clone."""
from __future__ import annotations

import logging
import os

import torch

from ..attention_patch.layers import original_module, temporal_attn1_paths, with_proxies
from .convert import SAME_BASE_TOLERANCE
from .format import FORMAT, BackwardWeightsError, key_out, key_v, read_backward_weights, resolve
from .keymap import SUFFIXES, Layer, file_key, layers_from_comfy_config
from .source import LazyTensors, locate_layers, read_layers, relative_difference, untrained_tensor

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


def read_any(file: str, layers: list[Layer], model_patcher=None
             ) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Compact tensors, metadata and origin names from a compact file or a full UNet (official release).

    A full UNet gives absolute weights (converted in memory; only 32 tensors are read);
    with `model_patcher`, a warning says when they were fine-tuned from another model.
    """
    src = LazyTensors(file)
    if src.metadata.get("format") == FORMAT:
        tensors, meta = read_backward_weights(src.file)
        return tensors, meta, {}
    scheme, layers = locate_layers(src, layers)
    pairs = read_layers(src, scheme, layers)
    tensors, origin = {}, {}
    for layer in layers:
        for key, suffix, t in ((key_v(layer.comfy), SUFFIXES[0], pairs[layer.comfy][0]),
                               (key_out(layer.comfy), SUFFIXES[1], pairs[layer.comfy][1])):
            tensors[key] = t
            origin[key] = file_key(scheme, layer, suffix)
    meta = {"kind": "absolute", "source": src.name, "source_format": scheme}
    if model_patcher is not None:
        _warn_if_other_base(model_patcher, src, scheme, layers)
    return tensors, meta, origin


def _warn_if_other_base(model, src: LazyTensors, scheme: str, layers: list[Layer]) -> None:
    theirs = untrained_tensor(src, scheme, layers[0])
    if theirs is None:
        return
    ours = original_module(model, layers[0].comfy).to_q.weight.detach().cpu()
    diff = relative_difference(ours, theirs)
    if diff > SAME_BASE_TOLERANCE:
        log.warning("%s: absolute weights fine-tuned from a different SVD than this model (to_q differs by %.3g); "
                    "the authors transplant a delta instead: `svd-inbetween convert %s -o OUT --base "
                    "svd.safetensors` (the 14-frame model they were trained from)", src.name, diff, src.name)


def load_backward(model_patcher, file: str, strength: float = 1.0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """layer path -> absolute (W_v', W_o') for this model, validated against its shapes."""
    tensors, meta, origin = read_any(file, model_layers(model_patcher), model_patcher)
    log.info("%s: %s backward weights (%s)", os.path.basename(file), meta["kind"], meta.get("source_format", FORMAT))
    return resolve(file, tensors, meta["kind"], model_base_weights(model_patcher), strength, origin)


def apply_backward_weights(model_patcher, file: str, strength: float = 1.0):
    """A clone of the model whose proxies carry the file's W_v'/W_o' (validated against it)."""
    return with_proxies(model_patcher, load_backward(model_patcher, file, strength))
