"""Where each segment of a keyframe chain sits in the chain latent (plain torch).

Segment k spans chain frames [start_k, stop_k) with its keyframes at both ends;
neighbours share the keyframe frame, so the chain has sum(frames) - (N - 2) frames and
keyframe k sits at chain frame boundaries[k].
"""
from __future__ import annotations

import torch

from ..conditioning.keyframes import FRAMES_KEY
from .validation import MIN_FRAMES, fail


def parse_frame_counts(text: str | int, segments: int) -> list[int]:
    """'25' (every segment) or '25, 14, 25' (one per segment) -> [frames of each segment]."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        counts = [int(p) for p in parts]
    except ValueError:
        fail("frames", f"expected whole numbers separated by commas, got {text!r}")
    if len(counts) == 1:
        counts = counts * segments
    if len(counts) != segments:
        fail("frames", f"gives {len(counts)} frame counts for {segments} segments ({segments + 1} keyframes); "
             "give one count for all segments or one per segment")
    for i, n in enumerate(counts):
        if n < MIN_FRAMES:
            fail("frames", f"segment {i + 1} has {n} frames; each segment needs at least {MIN_FRAMES} "
                 "(its two keyframes included)")
    return counts


def chain_windows(counts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each segment in the chain; neighbours overlap in their shared keyframe."""
    windows, start = [], 0
    for n in counts:
        windows.append((start, start + n))
        start += n - 1
    return windows


def boundaries(windows: list[tuple[int, int]]) -> list[int]:
    """Chain frame of each keyframe."""
    return [windows[0][0]] + [stop - 1 for _, stop in windows]


def fuse_windows(parts: list[torch.Tensor], windows: list[tuple[int, int]]) -> torch.Tensor:
    """Per-window predictions -> one chain tensor; frames covered twice get the mean.

    A single window returns its tensor itself; frames covered once are copied exactly.
    """
    if len(parts) == 1:
        return parts[0]
    total = max(stop for _, stop in windows)
    out = parts[0].new_zeros((total, *parts[0].shape[1:]))
    count = torch.zeros(total, dtype=out.dtype, device=out.device)
    for part, (start, stop) in zip(parts, windows):
        out[start:stop] += part
        count[start:stop] += 1
    return out / count.reshape(-1, *([1] * (out.ndim - 1)))


def with_frames(cond: list, frames: int) -> list:
    """A CONDITIONING list whose frame-count tag says `frames` (tensors shared, dicts copied)."""
    return [[t, dict(extra, **{FRAMES_KEY: frames})] for t, extra in cond]
