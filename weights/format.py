"""The pack's compact backward-weight format.

A safetensors file holding, for each of the 16 temporal attn1 layers of the SVD
UNet, `diffusion_model.<path>.to_v.weight` and `diffusion_model.<path>.to_out.0.weight`
(ComfyUI module paths). Header metadata:
    format          "svd_inbetween.backward"
    format_version  "1"
    kind            "absolute" (W_v', W_o' themselves) or "delta" (W' - W_base)
    plus free-form provenance: source, base, dtype, ...
Pickle-based files are never opened.
"""
from __future__ import annotations

import json
import os
import struct

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "svd_inbetween.backward"
FORMAT_VERSION = "1"
KINDS = ("absolute", "delta")
PREFIX = "diffusion_model."


class BackwardWeightsError(ValueError):
    """A backward-weights file that cannot be used; the message names the file."""


def key_v(path: str) -> str:
    return f"{PREFIX}{path}.to_v.weight"


def key_out(path: str) -> str:
    return f"{PREFIX}{path}.to_out.0.weight"


def check_safetensors(file: str) -> dict:
    """Parse the safetensors header without loading tensors; refuse anything else."""
    name = os.path.basename(file)
    if not os.path.isfile(file):
        raise BackwardWeightsError(f"{name}: file not found ({file})")
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BackwardWeightsError(f"{name}: empty or truncated file ({size} bytes); expected a .safetensors file")
        (n,) = struct.unpack("<Q", head)
        if head[:2] == b"PK" or head[:1] == b"\x80" or n <= 1 or n > min(size - 8, 100 * 2**20):
            raise BackwardWeightsError(
                f"{name}: not a safetensors file (looks like a pickle/zip checkpoint or is corrupt); "
                "only .safetensors is accepted, nothing is unpickled")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise BackwardWeightsError(f"{name}: corrupt safetensors header ({e})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise BackwardWeightsError(f"{name}: truncated: header promises {8 + n + end} bytes, file has {size}")
    return header


def save_backward_weights(file: str, weights: dict[str, tuple[torch.Tensor, torch.Tensor]], kind: str,
                          metadata: dict[str, str] | None = None) -> None:
    """weights: layer path -> (W_v or its delta, W_o or its delta)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    tensors = {}
    for path, (wv, wo) in weights.items():
        tensors[key_v(path)] = wv.detach().contiguous().cpu()
        tensors[key_out(path)] = wo.detach().contiguous().cpu()
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "dtype": ",".join(dtypes)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    save_file(tensors, file, metadata=meta)


def read_backward_weights(file: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a compact file (keyed as stored) and its metadata."""
    name = os.path.basename(file)
    header = check_safetensors(file)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise BackwardWeightsError(
            f"{name}: not an SVD inbetween backward-weights file (metadata format={meta.get('format')!r}, "
            f"expected {FORMAT!r}); convert the official release with `svd-inbetween convert`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BackwardWeightsError(f"{name}: format version {meta.get('format_version')!r} is not supported "
                                   f"(this pack reads {FORMAT_VERSION!r})")
    if meta.get("kind") not in KINDS:
        raise BackwardWeightsError(f"{name}: metadata kind={meta.get('kind')!r}, expected one of {KINDS}")
    with safe_open(file, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def resolve(file: str, tensors: dict[str, torch.Tensor], kind: str, base: dict[str, tuple[torch.Tensor, torch.Tensor]],
            strength: float = 1.0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Absolute W_v', W_o' for each layer of the model being patched.

    base: layer path -> the model's own (W_v, W_o). Deltas are added with `strength`;
    absolute weights are blended as W + strength * (W' - W) (strength 1 = W').
    Validates that every layer is present with the model's shape and a float dtype.
    """
    name = os.path.basename(file)
    out = {}
    for path, (wv, wo) in base.items():
        pair = []
        for key, ref in ((key_v(path), wv), (key_out(path), wo)):
            t = tensors.get(key)
            if t is None:
                raise BackwardWeightsError(f"{name}: missing tensor {key} (the file has {len(tensors)} tensors; "
                                           "is it for an SVD model?)")
            if tuple(t.shape) != tuple(ref.shape):
                raise BackwardWeightsError(f"{name}: layer {key} has shape {tuple(t.shape)}, the model expects "
                                           f"{tuple(ref.shape)}; these weights are for a different model")
            if not t.is_floating_point():
                raise BackwardWeightsError(f"{name}: layer {key} has dtype {t.dtype}, expected a float tensor")
            if not torch.isfinite(t).all():
                raise BackwardWeightsError(f"{name}: layer {key} contains NaN or Inf")
            ref32 = ref.detach().float().cpu()
            t32 = t.float()
            if kind == "delta":
                pair.append(ref32 + strength * t32 if strength != 1.0 else ref32 + t32)
            else:
                pair.append(t32 if strength == 1.0 else ref32 + strength * (t32 - ref32))
        out[path] = (pair[0], pair[1])
    return out
