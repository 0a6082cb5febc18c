"""Reading the 32 backward tensors out of a full SVD UNet file, lazily.

The official release is a whole diffusers UNet (~6 GB fp32); a base may be a
ComfyUI single-file checkpoint (~9 GB). Only the headers are parsed and only the
needed tensors are read (safetensors `safe_open`). Pickle files are never opened.
"""
from __future__ import annotations

import json
import logging
import os

import torch
from safetensors import safe_open

from .format import BackwardWeightsError, check_safetensors
from .keymap import SCHEME_HELP, SUFFIXES, Layer, detect_scheme, file_key, layers_from_diffusers_config, svd_layers

log = logging.getLogger(__name__)

DIFFUSERS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                   "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.fp16.safetensors.index.json")
PICKLE_EXTS = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}

WeightPairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def find_weights_file(path: str) -> str:
    """The safetensors file (or shard index) of a UNet given as a file, a unet/ folder or a pipeline folder."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise BackwardWeightsError(f"{os.path.basename(path) or path}: no such file or folder ({path})")
    for folder in (os.path.join(path, "unet"), path):
        for fname in DIFFUSERS_NAMES:
            candidate = os.path.join(folder, fname)
            if os.path.isfile(candidate):
                return candidate
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if len(files) == 1:
        return os.path.join(path, files[0])
    pickles = [f for d in (path, os.path.join(path, "unet")) if os.path.isdir(d)
               for f in os.listdir(d) if f.endswith(PICKLE_EXTS)]
    hint = (f"; found only pickle weights {pickles}, which are never opened: get the .safetensors release"
            if pickles else "")
    raise BackwardWeightsError(f"{os.path.basename(os.path.normpath(path))}: no diffusion_pytorch_model.safetensors "
                               f"in {path} or its unet/ subfolder{hint}")


class LazyTensors:
    """Header-level view of a safetensors file or sharded set; tensors are read only when asked."""

    def __init__(self, path: str):
        self.file = find_weights_file(path)
        self.name = os.path.basename(self.file)
        self.folder = os.path.dirname(os.path.abspath(self.file))
        self.where: dict[str, str] = {}
        self.header: dict[str, dict] = {}
        self.metadata: dict[str, str] = {}
        if self.file.endswith(".index.json"):
            self._read_index()
        else:
            self._add_shard(self.file, metadata=True)

    def _read_index(self) -> None:
        try:
            with open(self.file, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise BackwardWeightsError(f"{self.name}: unreadable shard index ({e})") from None
        for shard in sorted(set(weight_map.values())):
            self._add_shard(os.path.join(self.folder, shard), metadata=False)

    def _add_shard(self, file: str, metadata: bool) -> None:
        header = check_safetensors(file)
        if metadata:
            self.metadata = header.get("__metadata__") or {}
        for key, info in header.items():
            if key != "__metadata__":
                self.header[key] = info
                self.where[key] = file

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.header[key]["shape"])

    def dtype(self, key: str) -> str:
        return self.header[key]["dtype"]

    def read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Exactly these tensors, one safe_open per file."""
        out = {}
        by_file: dict[str, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.where[k], []).append(k)
        for file, ks in by_file.items():
            with safe_open(file, framework="pt") as f:
                for k in ks:
                    out[k] = f.get_tensor(k)
        return out

    def diffusers_config(self) -> dict | None:
        path = os.path.join(self.folder, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            return None
        return cfg if isinstance(cfg, dict) and "block_out_channels" in cfg else None


def _no_layers_message(src: LazyTensors, layers: list[Layer]) -> str:
    examples = ", ".join(repr(k) for k in src.keys()[:3]) or "none"
    looked = "; ".join(f"{file_key(s, layers[0], SUFFIXES[0])!r} ({help_})" for s, help_ in SCHEME_HELP.items())
    return (f"{src.name}: not an SVD UNet: none of the 16 temporal attention layers found among its "
            f"{len(src.keys())} tensors (e.g. {examples}). Looked for {looked}. Use the official backward-motion "
            "release (unet/diffusion_pytorch_model.safetensors) or a file made by `svd-inbetween convert`")


def locate_layers(src: LazyTensors, layers: list[Layer] | None = None) -> tuple[str, list[Layer]]:
    """The key scheme of `src` and its 16 layers, checked against the header (nothing is read).

    Without `layers`, they come from a diffusers config.json beside the file, else
    from the SVD block structure at the width the file's first layer has.
    """
    names = layers or svd_layers()
    scheme, found = detect_scheme(src.keys(), names)
    if scheme is None:
        raise BackwardWeightsError(_no_layers_message(src, names))
    if layers is None:
        cfg = src.diffusers_config() if scheme == "diffusers" else None
        if cfg is not None:
            layers = layers_from_diffusers_config(cfg)
            log.info("%s: layer widths from %s", src.name, os.path.join(src.folder, "config.json"))
        else:
            first = file_key(scheme, names[0], SUFFIXES[0])
            if first not in src.header or len(src.shape(first)) != 2:
                raise BackwardWeightsError(f"{src.name}: missing or malformed tensor {first} (layer {names[0].comfy})")
            layers = svd_layers(src.shape(first)[0])
    for layer in layers:
        for suffix in SUFFIXES:
            key = file_key(scheme, layer, suffix)
            if key not in src.header:
                raise BackwardWeightsError(
                    f"{src.name}: missing tensor {key} (layer {layer.comfy}); the file has {found} of the "
                    f"{2 * len(layers)} backward tensors, is it a complete SVD UNet?")
            if src.shape(key) != layer.shape:
                raise BackwardWeightsError(
                    f"{src.name}: tensor {key} (layer {layer.comfy}) has shape {src.shape(key)}, expected "
                    f"{layer.shape}; these weights are not for this SVD model")
            if src.dtype(key) not in FLOAT_DTYPES:
                raise BackwardWeightsError(f"{src.name}: tensor {key} has dtype {src.dtype(key)}, expected a float")
    return scheme, layers


def read_layers(src: LazyTensors, scheme: str, layers: list[Layer]) -> WeightPairs:
    """ComfyUI layer path -> (W_v, W_o) as stored (only these 2 * len(layers) tensors are read)."""
    keys = [file_key(scheme, layer, s) for layer in layers for s in SUFFIXES]
    got = src.read(keys)
    out = {}
    for layer in layers:
        wv, wo = (got[file_key(scheme, layer, s)] for s in SUFFIXES)
        for key, t in ((file_key(scheme, layer, SUFFIXES[0]), wv), (file_key(scheme, layer, SUFFIXES[1]), wo)):
            if not torch.isfinite(t).all():
                raise BackwardWeightsError(f"{src.name}: tensor {key} contains NaN or Inf")
        out[layer.comfy] = (wv, wo)
    return out


def untrained_tensor(src: LazyTensors, scheme: str, layer: Layer) -> torch.Tensor | None:
    """to_q.weight of `layer`: not trained by the fine-tune, so it still equals the fine-tune's base."""
    key = file_key(scheme, layer, "to_q.weight")
    if key not in src.header or src.shape(key) != layer.shape:
        return None
    return src.read([key])[key]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)).item()
