"""Feed-forward layers that run one video at a time inside dual-direction UNet calls.

The largest live tensor of an SVD UNet call is a feed-forward's hidden activation
(GEGLU: 8x the channels, at the full latent resolution). A call that holds the forward
and backward videos together would double it. A feed-forward acts on each token on its
own, so running it per video gives the same values (up to GEMM blocking) and bounds
that tensor by one video whatever the number of videos in the call.

The wrapper registers the original's `net` under the same name, so state-dict keys,
weight patches and device moves are unchanged. It splits only while
`per_video_feedforward(n)` is active (the guider's model wrapper sets it to the number
of chunks of the call) and its input holds at least SPLIT_MIN_BYTES; everywhere else it
calls `net` exactly as the original does. Small inputs stay whole: splitting them saves
little memory and costs a few kernel launches per layer (measurable on a tiny CPU model).
Under `chunking.low_memory()` (the lowvram execution) it runs over pieces of rows instead
once its input exceeds a piece (see attention_patch/chunking.py).
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
from torch import nn

from .chunking import over_rows, piece_rows

_PARTS: contextvars.ContextVar[int] = contextvars.ContextVar("svd_inbetween_feedforward_parts", default=1)
FEEDFORWARD_CLASS = "FeedForward"
# Input bytes from which a feed-forward is split (its GEGLU hidden state is ~8x larger).
SPLIT_MIN_BYTES = 8 * 2**20


class PerVideoFeedForward(nn.Module):
    """Stands in for a ComfyUI `FeedForward`; see the module docstring."""

    is_svd_inbetween_feedforward = True

    def __init__(self, original: nn.Module):
        super().__init__()
        object.__setattr__(self, "original", original)
        self.net = original.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = piece_rows(x)
        if rows is not None:
            return over_rows(self.net, rows, x)
        parts = _PARTS.get()
        if parts <= 1 or x.shape[0] < parts or x.numel() * x.element_size() < SPLIT_MIN_BYTES:
            return self.net(x)
        # Layouts are video-major ((b t) s c in spatial blocks, (b s) t c in temporal ones),
        # so equal pieces of dim 0 are whole videos.
        return torch.cat([self.net(piece) for piece in x.chunk(parts)])


def is_feedforward_wrapper(obj) -> bool:
    return getattr(obj, "is_svd_inbetween_feedforward", False) is True


def feedforward_paths(unet: nn.Module) -> list[str]:
    """Module paths (relative to the UNet) of every ComfyUI FeedForward, wrapped or not."""
    return [name for name, mod in unet.named_modules()
            if type(mod).__name__ == FEEDFORWARD_CLASS or is_feedforward_wrapper(mod)]


@contextlib.contextmanager
def per_video_feedforward(parts: int):
    """Wrapped feed-forwards split their batch into `parts` equal pieces inside this block."""
    token = _PARTS.set(max(1, int(parts)))
    try:
        yield
    finally:
        _PARTS.reset(token)
