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

from ..attention_patch.layers import PREFIX

FORMAT = "svd_inbetween.backward"
FORMAT_VERSION = "1"
KINDS = ("absolute", "delta")


class BackwardWeightsError(ValueError):
    """A backward-weights file that cannot be used; the message names the file."""


def write_atomically(write, file: str) -> None:
    """write(tmp) then rename over `file`: readers never see half a file; the temporary goes on failure."""
    tmp = f"{file}.partial"
    try:
        write(tmp)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def key_v(path: str) -> str:
    return f"{PREFIX}{path}.to_v.weight"


def key_out(path: str) -> str:
    return f"{PREFIX}{path}.to_out.0.weight"


SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U8", "BOOL",
                      "U16", "U32", "U64", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"}
MAX_HEADER = 100 * 2**20


def check_safetensors(file: str) -> dict:
    """Parse the safetensors header without loading tensors; refuse anything else.

    Pickle-based checkpoints (.ckpt/.bin/.pt, zip or raw pickle) are recognised by
    their first bytes and refused; nothing is ever unpickled.
    """
    name = os.path.basename(file)
    if not os.path.isfile(file):
        raise BackwardWeightsError(f"{name}: file not found ({file})")
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BackwardWeightsError(f"{name}: empty or truncated file ({size} bytes); expected a .safetensors file")
        (n,) = struct.unpack("<Q", head)
        first = f.read(1)
        if not (2 <= n <= min(MAX_HEADER, size - 8) and first == b"{"):
            # Only now look for pickle magic: a real header length may start with the same bytes.
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise BackwardWeightsError(
                    f"{name}: this is a pickle/zip (torch.save) checkpoint, not safetensors; it was not opened. "
                    "Only .safetensors is accepted: use the release's diffusion_pytorch_model.safetensors")
            if 2 <= n <= MAX_HEADER and first in (b"{", b""):
                raise BackwardWeightsError(f"{name}: truncated: the header alone needs {n + 8} bytes, file has {size}")
            raise BackwardWeightsError(f"{name}: not a safetensors file (header length {n}); only .safetensors "
                                       "is accepted, nothing is unpickled")
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise BackwardWeightsError(f"{name}: not a safetensors file (corrupt header: {e})") from None
    if not isinstance(header, dict):
        raise BackwardWeightsError(f"{name}: not a safetensors file (header is not a JSON object)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            ok = info["dtype"] in SAFETENSORS_DTYPES and isinstance(info["shape"], list) and 0 <= start <= stop
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise BackwardWeightsError(f"{name}: corrupt safetensors header entry for {key!r}")
        end = max(end, stop)
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
            strength: float = 1.0, origin: dict[str, str] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Absolute W_v', W_o' for each layer of the model being patched.

    base: layer path -> the model's own (W_v, W_o). Deltas are added with `strength`;
    absolute weights are blended as W + strength * (W' - W) (strength 1 = W').
    Validates that every layer is present with the model's shape and a float dtype.
    origin: compact key -> the key the tensor had in `file`, for messages.
    """
    name = os.path.basename(file)
    origin = origin or {}
    out = {}
    for path, (wv, wo) in base.items():
        pair = []
        for key, ref in ((key_v(path), wv), (key_out(path), wo)):
            t = tensors.get(key)
            where = origin.get(key, key)
            if where != key:
                where = f"{where} (layer {path})"
            if t is None:
                raise BackwardWeightsError(f"{name}: missing tensor {where} (the file has {len(tensors)} of the "
                                           f"{2 * len(base)} needed; is it for an SVD model?)")
            if tuple(t.shape) != tuple(ref.shape):
                raise BackwardWeightsError(f"{name}: tensor {where} has shape {tuple(t.shape)}, the model expects "
                                           f"{tuple(ref.shape)}; these weights are for a different model")
            if not t.is_floating_point():
                raise BackwardWeightsError(f"{name}: tensor {where} has dtype {t.dtype}, expected a float tensor")
            if not torch.isfinite(t).all():
                raise BackwardWeightsError(f"{name}: tensor {where} contains NaN or Inf")
            ref32 = ref.detach().float().cpu()
            t32 = t.float()
            if kind == "delta":
                pair.append(ref32 + t32 if strength == 1.0 else ref32 + strength * t32)
            else:
                pair.append(t32 if strength == 1.0 else ref32 + strength * (t32 - ref32))
        out[path] = (pair[0], pair[1])
    return out
