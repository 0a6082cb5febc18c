"""Backward weights read once: kept in memory, and on request as a compact file.

The official release is a 6 GB UNet and its base a 4-9 GB checkpoint; only 32 tensors
of each matter (plus 16 untrained to_q for the base check). A node that re-executes
(another model upstream, another strength, another workflow) gets them from memory,
keyed on the files' identity (path, size, mtime, inode), so an edited or replaced
file is read again. The transplant's delta can also be written as a compact file,
whose metadata names the sources' size and mtime: a later ComfyUI session reads that
small file instead of the large ones while the sources are unchanged.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .format import (PREFIX, BackwardWeightsError, check_safetensors, key_out, key_v, read_backward_weights,
                     save_backward_weights, write_atomically)

log = logging.getLogger(__name__)

WRITER = "SVDInbetweenLoadBackwardWeights"


@dataclass(frozen=True)
class Loaded:
    """What a weights file (with its base) gives, before it meets a model's own weights."""
    tensors: dict[str, torch.Tensor]   # compact keys -> absolute W' or delta; shared, never modified
    meta: dict[str, str]               # kind, source, source_format, base, ...
    origin: dict[str, str] = field(default_factory=dict)  # compact key -> key in the source file
    warnings: tuple[str, ...] = ()     # logged when first read; repeated on every use


def file_identity(path: str) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino


def provenance(paths: list[str] | str) -> str:
    """Size and mtime of source files (a release may be sharded), as stored in a saved delta's metadata."""
    out = []
    for path in [paths] if isinstance(paths, str) else paths:
        st = os.stat(path)
        out.append(f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(out)


class MemoryCache:
    """A few Loaded entries, least recently used dropped first (a full-size delta is ~100 MB)."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Loaded | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key, value: Loaded) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


MEMORY = MemoryCache()


def delta_file_name(weights_name: str, base_name: str) -> str:
    """File name for a saved transplant: the release's folder (or file) name, _delta_, the base's name.

    'svd_reverse_motion_with_attnflip/unet/diffusion_pytorch_model.safetensors' with 'svd.safetensors'
    -> 'svd_reverse_motion_with_attnflip_delta_svd.safetensors'.
    """
    parts = weights_name.replace("\\", "/").split("/")
    stem = parts[0] if len(parts) > 1 else os.path.splitext(parts[0])[0]
    base = os.path.splitext(os.path.basename(base_name.replace("\\", "/")))[0]
    return f"{stem}_delta_{base}.safetensors"


def saved_is_current(path: str, source: list[str] | str, base: str) -> bool:
    """Whether `path` is a delta this node saved from these unchanged files (its header only is read)."""
    if not os.path.isfile(path):
        return False
    try:
        meta = check_safetensors(path).get("__metadata__") or {}
    except BackwardWeightsError:
        return False
    return (meta.get("writer") == WRITER and meta.get("kind") == "delta"
            and meta.get("source_provenance") == provenance(source) and meta.get("base_provenance") == provenance(base))


def read_saved(path: str, source: list[str] | str, base: str) -> Loaded | None:
    """The saved delta at `path` if it was made by this node from these unchanged files, else None."""
    if not saved_is_current(path, source, base):
        return None
    try:
        tensors, meta = read_backward_weights(path)
    except BackwardWeightsError as e:
        log.warning("%s: not used as the saved transplant (%s)", os.path.basename(path), e)
        return None
    warnings = tuple(w for w in meta.get("warnings", "").split("\n") if w)
    return Loaded(tensors, meta, {}, warnings)


def save_delta(path: str, loaded: Loaded, source: list[str] | str, base: str) -> bool:
    """Write the delta as a compact file (fp32: picking it later gives exactly the same model).

    A file of that name that this node did not write is left alone.
    """
    if os.path.isfile(path):
        try:
            _, meta = read_backward_weights(path)
            ours = meta.get("writer") == WRITER
        except BackwardWeightsError:
            ours = False
        if not ours:
            log.warning("%s exists and was not written by %s; the transplant was not saved",
                        os.path.basename(path), WRITER)
            return False
    suffix = ".to_v.weight"
    layers = [k[len(PREFIX):-len(suffix)] for k in loaded.tensors if k.endswith(suffix)]
    pairs = {p: (loaded.tensors[key_v(p)], loaded.tensors[key_out(p)]) for p in layers}
    meta = {k: v for k, v in loaded.meta.items() if k not in ("format", "format_version", "kind", "dtype")}
    meta.update(writer=WRITER, source_provenance=provenance(source), base_provenance=provenance(base),
                warnings="\n".join(loaded.warnings))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(lambda tmp: save_backward_weights(tmp, pairs, "delta", meta), path)
    log.info("saved the transplant as %s (%.1f MiB)", path, os.path.getsize(path) / 2**20)
    return True
