"""Fusing the two directions' predictions."""
from __future__ import annotations

import torch


def fuse(forward: torch.Tensor, backward: torch.Tensor, forward_weight: float | torch.Tensor) -> torch.Tensor:
    """w * forward + (1 - w) * backward; both already in forward time.

    w is a number or per-frame weights [T, 1, 1, 1] (frame_ramp). A number at an endpoint
    returns the branch itself exactly (no 1.0 * x rounding).
    """
    if torch.is_tensor(forward_weight):
        return forward_weight * forward + (1.0 - forward_weight) * backward
    if forward_weight == 1.0:
        return forward
    if forward_weight == 0.0:
        return backward
    return forward * forward_weight + backward * (1.0 - forward_weight)


def frame_ramp(frames: int, like: torch.Tensor) -> torch.Tensor:
    """Per-frame forward weights 1 -> 0 (MPD on TRF): the first frame is all forward path, the last
    all backward path. float32 as the authors' linspace, shaped to broadcast over [T, C, H, W]."""
    return torch.linspace(1.0, 0.0, steps=frames, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))
