"""Putting backward weights from a file onto a model clone."""
from __future__ import annotations

from ..attention_patch.layers import original_module, temporal_attn1_paths, with_proxies
from .format import read_backward_weights, resolve


def model_base_weights(model_patcher) -> dict:
    """layer path -> the model's own (W_v, W_o) of each temporal attn1."""
    out = {}
    for path in temporal_attn1_paths(model_patcher):
        mod = original_module(model_patcher, path)
        out[path] = (mod.to_v.weight, mod.to_out[0].weight)
    return out


def apply_backward_weights(model_patcher, file: str, strength: float = 1.0):
    """A clone of the model whose proxies carry the file's W_v'/W_o' (validated against it)."""
    tensors, meta = read_backward_weights(file)
    resolved = resolve(file, tensors, meta["kind"], model_base_weights(model_patcher), strength)
    return with_proxies(model_patcher, resolved)
