"""Temporal attention maths shared by inference and training.

Everything here is plain torch on tensors shaped the way ComfyUI's temporal
attention sees them: rows are (video, spatial position), the second axis is time.
"""
from __future__ import annotations

import torch


def rot180(maps: torch.Tensor) -> torch.Tensor:
    """Rotate T x T attention maps by 180 degrees (reverse both frame axes).

    If A attends frame i to frame j in forward time, the rotated map attends
    T-1-i to T-1-j, which is the same motion seen in time-reversed order.
    """
    return maps.flip(-2, -1)


def flip_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Reverse time in a batch laid out as consecutive videos of `frames` frames."""
    if x.shape[0] % frames:
        raise ValueError(f"batch of {x.shape[0]} is not a whole number of {frames}-frame videos")
    return x.reshape(-1, frames, *x.shape[1:]).flip(1).reshape(x.shape)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, T, H*D] -> [N, H, T, D]."""
    n, frames, width = t.shape
    return t.reshape(n, frames, heads, width // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[N, H, T, D] -> [N, T, H*D]."""
    n, heads, frames, dim = t.shape
    return t.transpose(1, 2).reshape(n, frames, heads * dim)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Post-softmax attention probabilities A, [N, H, T, T], in q's dtype.

    Scores and softmax run in float32 so fp16 models get the same maps as the
    stock kernels would use internally.
    """
    qh = split_heads(q, heads).float()
    kh = split_heads(k, heads).float()
    scale = qh.shape[-1] ** -0.5
    scores = torch.matmul(qh * scale, kh.transpose(-2, -1))
    return scores.softmax(dim=-1).to(q.dtype)


def apply_probs(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attend values v [N, T, H*D] with maps [N, H, T, T] -> [N, T, H*D]."""
    heads = probs.shape[1]
    out = torch.matmul(probs.to(v.dtype), split_heads(v, heads))
    return merge_heads(out)

