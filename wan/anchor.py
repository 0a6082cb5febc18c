"""Anchor Frame Bridging's anchor: the forward clip's breakpoint, taken from the reverse clip at the mirrored time.

The paper (Hou et al., ICLR 2026) picks the frame of the forward clip that is least like its neighbours by LPIPS and
takes the anchor from the reverse clip (generated from end to start) at the mirrored position 1 - alpha. Its code
holds neither step, so the choices are ours and written down in docs/wan.md:
- a frame's score is the mean LPIPS to its two neighbours (one neighbour at the clip's ends);
- the breakpoint is the highest score among frames `edge` .. frames - 1 - `edge` (ties: the earliest);
- a breakpoint at fraction alpha = b / (F - 1) of the forward clip mirrors to frame round((1 - alpha) (R - 1)) of a
  reverse clip of R >= F frames, i.e. R - 1 - b when both have F frames.
"""
from __future__ import annotations

from typing import Callable

import torch

# (frames a [T, H, W, 3], frames b [T, H, W, 3]) in [0, 1] -> [T] distances
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def neighbour_scores(clip: torch.Tensor, distance: Distance) -> torch.Tensor:
    """[T] float64: each frame's mean distance to its neighbours."""
    steps = distance(clip[:-1], clip[1:]).double()  # steps[t]: frame t -> t + 1
    scores = torch.empty(clip.shape[0], dtype=torch.float64)
    scores[0], scores[-1] = steps[0], steps[-1]
    scores[1:-1] = (steps[:-1] + steps[1:]) / 2
    return scores


def breakpoint(scores: torch.Tensor, edge: int) -> int:
    """The highest-scoring frame at least `edge` frames from either end (the earliest of equals)."""
    inner = scores[edge:scores.shape[0] - edge]
    return edge + int(torch.argmax(inner))  # argmax returns the first maximum


def mirrored(position: int, frames: int, reverse_frames: int) -> int:
    """The reverse clip's frame showing the moment at `position` of a forward clip of `frames` frames."""
    if reverse_frames == frames:
        return frames - 1 - position
    alpha = position / (frames - 1)
    return round((1 - alpha) * (reverse_frames - 1))


def pick_anchor(forward: torch.Tensor, reverse: torch.Tensor, distance: Distance, edge: int = 1):
    """(anchor image [1, H, W, C], its position in the forward clip, per-frame scores [T])."""
    scores = neighbour_scores(forward, distance)
    b = breakpoint(scores, edge)
    return reverse[mirrored(b, forward.shape[0], reverse.shape[0])][None].clone(), b, scores
