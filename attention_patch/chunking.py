"""Low-memory execution: the work of one UNet call in pieces of rows.

Inside `low_memory()` (the guider's `lowvram` execution enters it around each UNet
call), the layers that act on each row of their input on its own run over pieces of
rows, each into its slice of one preallocated output, so their intermediates are bounded
by a piece instead of a whole video:
- feed-forwards (attention_patch/feedforward.py): each token on its own, so any rows;
- the spatial half of SVD's res-blocks (`in_layers`, `out_layers`: GroupNorm, SiLU,
  3x3 convolution over one frame; GroupNorm normalises each sample, i.e. each frame):
  whole frames (`FrameChunked` below);
- the explicit temporal attention of the rotating proxies (attention_patch/proxy.py):
  each (video, position) row attends over its own frames, so any rows.
Every row gets the same operations on the same values as unchunked, so the output equals
the unchunked one up to GEMM blocking. Outside the block every wrapper calls the original
module on the whole input, so stock sampling through a patched model is untouched.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import torch
from torch import nn

# Bytes of the input of one piece. Intermediates of a piece are a small multiple of it
# (a GEGLU feed-forward: ~16x; fp32 attention scores: ~8x), so pieces keep them near a
# few hundred MiB at most while GEMMs stay thousands of rows tall.
PIECE_BYTES = 16 * 2**20

_PIECE: contextvars.ContextVar[int | None] = contextvars.ContextVar("svd_inbetween_piece_bytes", default=None)


@contextlib.contextmanager
def low_memory(piece_bytes: int | None = None):
    """Chunking wrappers run over pieces of about `piece_bytes` of input inside this block."""
    token = _PIECE.set(int(piece_bytes if piece_bytes is not None else PIECE_BYTES))
    try:
        yield
    finally:
        _PIECE.reset(token)


def piece_rows(*inputs: torch.Tensor) -> int | None:
    """Rows (along dim 0) per piece under `low_memory`, or None when the inputs stay whole."""
    limit = _PIECE.get()
    n = inputs[0].shape[0]
    if limit is None or n < 2:
        return None
    row = max(t[0].numel() * t.element_size() for t in inputs)
    rows = max(1, limit // max(row, 1))
    return rows if rows < n else None


def over_rows(fn: Callable[..., torch.Tensor], rows: int, *inputs: torch.Tensor) -> torch.Tensor:
    """fn over pieces of `rows` rows of every input (dim 0), written into one output."""
    n = inputs[0].shape[0]
    out = None
    for start in range(0, n, rows):
        piece = fn(*(t[start:start + rows] for t in inputs))
        if out is None:
            out = piece.new_empty((n, *piece.shape[1:]))
        out[start:start + piece.shape[0]] = piece
        del piece
    return out


def in_pieces(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """fn(*inputs), over pieces of rows under `low_memory` when the inputs exceed a piece."""
    rows = piece_rows(*inputs)
    return fn(*inputs) if rows is None else over_rows(fn, rows, *inputs)


class FrameChunked(nn.Module):
    """Stands in for the `in_layers` / `out_layers` Sequential of a spatial res-block.

    Registers the original's children under their own names (state-dict keys, weight
    patches, ComfyUI's per-layer casting unchanged) and calls the original itself, over
    whole frames (its batch rows) under `low_memory`, on the whole input elsewhere.
    """

    is_svd_inbetween_chunked = True

    def __init__(self, original: nn.Sequential):
        super().__init__()
        object.__setattr__(self, "original", original)
        for name, child in original.named_children():
            self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_pieces(self.original, x)


def is_chunked_wrapper(obj) -> bool:
    return getattr(obj, "is_svd_inbetween_chunked", False) is True


SPATIAL_LAYERS = ("in_layers", "out_layers")


def spatial_resblock_layer_paths(unet: nn.Module) -> list[str]:
    """`in_layers`/`out_layers` paths of res-blocks whose every layer acts on one frame.

    Those are the 2-D (spatial) res-blocks of SVD's VideoResBlocks: GroupNorm per sample,
    2-D convolutions. Temporal res-blocks (`time_stack`, 3-D convolutions over frames, a
    GroupNorm over the whole video) and blocks that resample inside (`updown`) or split
    `out_layers` (`use_scale_shift_norm`) are left alone.
    """
    out = []
    for name, mod in unet.named_modules():
        layers = [getattr(mod, attr, None) for attr in SPATIAL_LAYERS]
        if not all(isinstance(s, nn.Sequential) or is_chunked_wrapper(s) for s in layers):
            continue
        if getattr(mod, "updown", True) or getattr(mod, "use_scale_shift_norm", True):
            continue
        if all(_acts_per_frame(s) for s in layers):
            out += [f"{name}.{attr}" if name else attr for attr in SPATIAL_LAYERS]
    return out


def _acts_per_frame(seq: nn.Module) -> bool:
    seq = seq.original if is_chunked_wrapper(seq) else seq
    for layer in seq.children():
        # GroupNorm normalises each sample, a 2-D convolution sees one frame; a 3-D one mixes frames
        if not isinstance(layer, (nn.GroupNorm, nn.Conv2d, nn.SiLU, nn.Dropout, nn.Identity)):
            return False
    return True
