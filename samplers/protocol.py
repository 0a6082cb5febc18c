"""How a sampler asks the dual-direction guider for ONE direction per model call.

The fused schedule needs nothing of this: each model call returns the fused prediction.
The alternating schedule (ViBiD) denoises forward, re-noises, then denoises backward; it
puts a DirectionRequest in model_options[DIRECTION_KEY] and the guider fills it in.
Samplers that send requests carry SENDS_REQUESTS_MARK; guiders that answer carry
ANSWERS_MARK, so a mismatched GUIDER/SAMPLER pair is refused before sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DIRECTION_KEY = "svd_inbetween_direction"
FORWARD, BACKWARD = "forward", "backward"
SENDS_REQUESTS_MARK = "svd_inbetween_sends_direction_requests"
ANSWERS_MARK = "svd_inbetween_answers_directions"


@dataclass
class DirectionRequest:
    """One direction's guided x0 instead of the fused one.

    The guider fills in, in forward time:
      uncond: that direction's unconditional x0 (None if it skipped it at cfg 1);
      pins:   frame index -> keyframe latent [1, C, H, W] (model space) of the keyframe
              at the far end of this direction (forward: the end frame, backward: the start).
    """
    direction: str
    uncond: torch.Tensor | None = None
    pins: dict[int, torch.Tensor] | None = None


def sends_requests(sampler) -> bool:
    """Whether a SAMPLER (comfy KSAMPLER) sends DirectionRequests."""
    return getattr(getattr(sampler, "sampler_function", None), SENDS_REQUESTS_MARK, False) is True


def answers_requests(guider) -> bool:
    return getattr(guider, ANSWERS_MARK, False) is True
