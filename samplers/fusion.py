"""Fusing the two directions' predictions."""
from __future__ import annotations

import torch


def fuse(forward: torch.Tensor, backward: torch.Tensor, forward_weight: float) -> torch.Tensor:
    """w * forward + (1 - w) * backward; both already in forward time.

    The endpoints return the branch itself exactly (no 1.0 * x rounding).
    """
    if forward_weight == 1.0:
        return forward
    if forward_weight == 0.0:
        return backward
    return forward * forward_weight + backward * (1.0 - forward_weight)
