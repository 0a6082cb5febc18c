"""Official backward-motion release (full diffusers UNet) -> the pack's compact file.

absolute: W_v', W_o' themselves; the loader puts them on whatever SVD it patches.
delta:    W' - W_base, with W_base read from the checkpoint the weights were
          fine-tuned from (14-frame SVD img2vid for the official release); the loader
          adds it to the model it patches. This is the authors' transplant of the
          14-frame fine-tune onto SVD-XT.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .format import FORMAT, BackwardWeightsError, save_backward_weights, write_atomically
from .keymap import Layer
from .source import LazyTensors, WeightPairs, locate_layers, read_layers, relative_difference, untrained_tensor

log = logging.getLogger(__name__)

FP16_MAX = torch.finfo(torch.float16).max
# to_q of a base and of the fine-tune trained from it differ by at most fp16 rounding.
SAME_BASE_TOLERANCE = 1e-2


@dataclass
class Converted:
    weights: WeightPairs
    kind: str
    metadata: dict[str, str]


class BaseCheckpointError(BackwardWeightsError):
    """The base checkpoint (the model the weights were fine-tuned from) cannot be used."""


def base_mismatch(src: LazyTensors, src_scheme: str, base: LazyTensors, base_scheme: str,
                  layers: list[Layer]) -> float | None:
    """Largest relative difference of the untrained to_q between the fine-tune and a candidate base."""
    worst = None
    for layer in layers:
        a, b = untrained_tensor(src, src_scheme, layer), untrained_tensor(base, base_scheme, layer)
        if a is None or b is None:
            return None
        d = relative_difference(a, b)
        worst = d if worst is None else max(worst, d)
    return worst


def base_warning(src_name: str, base_name: str, mismatch: float | None) -> str | None:
    """The warning for a base that does not look like the one the weights were fine-tuned from, if any."""
    if mismatch is None or mismatch <= SAME_BASE_TOLERANCE:
        return None
    return (f"{src_name}: its untrained to_q weights differ from {base_name} by {mismatch:.3g} (relative): the base "
            "does not look like the model these weights were fine-tuned from (for the official release: 14-frame "
            "SVD, svd.safetensors)")


@dataclass
class Delta:
    weights: WeightPairs        # layer path -> (W_v' - W_v_base, W_o' - W_o_base), float32
    metadata: dict[str, str]    # base, base_format, base_to_q_rel_diff
    warnings: list[str]         # already logged once; callers that cache the delta may repeat them


def delta_from_base(src: LazyTensors, scheme: str, layers: list[Layer], weights: WeightPairs, base: str,
                    option: str = "--base") -> Delta:
    """W' - W_base for each layer, W_base read (32 tensors) from the checkpoint `base`.

    `option` names the setting that gave the base, for messages (the CLI's --base, a node input).
    """
    try:
        b = LazyTensors(base)
        if b.metadata.get("format") == FORMAT:
            raise BackwardWeightsError(f"{b.name}: {option} must be the SVD checkpoint the weights were trained "
                                       "from (e.g. svd.safetensors), not a backward-weights file")
        b_scheme, _ = locate_layers(b, layers)
        base_w = read_layers(b, b_scheme, layers)
    except BaseCheckpointError:
        raise
    except BackwardWeightsError as e:
        raise BaseCheckpointError(str(e)) from None
    delta = {p: (wv.float() - base_w[p][0].float(), wo.float() - base_w[p][1].float())
             for p, (wv, wo) in weights.items()}
    meta = {"base": os.path.basename(os.path.normpath(base)), "base_format": b_scheme}
    warnings = []
    mismatch = base_mismatch(src, scheme, b, b_scheme, layers)
    if mismatch is not None:
        meta["base_to_q_rel_diff"] = f"{mismatch:.3g}"
    other = base_warning(src.name, b.name, mismatch)
    if other:
        warnings.append(other)
    if all(not (dv.any() or do.any()) for dv, do in delta.values()):
        warnings.append(f"{src.name}: every delta is zero: the base is identical to the fine-tuned weights")
    for message in warnings:
        log.warning("%s", message)
    return Delta(delta, meta, warnings)


def convert_weights(source: str, base: str | None = None, fp16: bool = False) -> Converted:
    """Read the 32 tensors of `source` (and `base`) and build compact weights in memory."""
    src = LazyTensors(source)
    if src.metadata.get("format") == FORMAT:
        raise BackwardWeightsError(f"{src.name}: already in the pack's compact format "
                                   f"(kind {src.metadata.get('kind')}); load it directly")
    scheme, layers = locate_layers(src)
    weights = read_layers(src, scheme, layers)
    meta = {"source": os.path.basename(os.path.normpath(source)), "source_format": scheme, "base": "",
            "converter": "svd-inbetween convert"}
    kind = "absolute"
    if base is not None:
        delta = delta_from_base(src, scheme, layers, weights, base)
        weights, kind = delta.weights, "delta"
        meta.update(delta.metadata)
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        for path, (wv, wo) in weights.items():
            peak = max(wv.abs().max().item(), wo.abs().max().item())
            if peak > FP16_MAX:
                raise BackwardWeightsError(f"{src.name}: layer {path} has values up to {peak:.3g}, beyond fp16; "
                                           "convert without --fp16")
    weights = {p: (wv.to(dtype), wo.to(dtype)) for p, (wv, wo) in weights.items()}
    return Converted(weights, kind, meta)


def convert(source: str, out: str, base: str | None = None, fp16: bool = False) -> Converted:
    """Convert and write `out` (atomically; never over the source or base)."""
    done = convert_weights(source, base, fp16)
    real_out = os.path.realpath(out)
    for given in (source, base):
        if given is not None and os.path.realpath(given) == real_out:
            raise BackwardWeightsError(f"{os.path.basename(out)}: output would overwrite an input; pick another -o")
    write_atomically(lambda tmp: save_backward_weights(tmp, done.weights, done.kind, done.metadata), out)
    return done
