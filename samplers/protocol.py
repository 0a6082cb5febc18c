"""How a sampler asks the dual-direction guider for something other than the fused x0.

The fused schedule needs nothing of this: each model call returns the fused prediction.
The alternating schedule (ViBiD) denoises forward, re-noises, then denoises backward; MPD
also asks for the forward path distilled into the backward one, and (on TRF) for fused
predictions with the forward path's unconditional x0. Such a sampler puts a
DirectionRequest in model_options[DIRECTION_KEY] and the guider fills it in.
Samplers that send requests carry SAMPLER_MARK (naming which pack sampler they are);
guiders that answer carry ANSWERS_MARK, so a mismatched GUIDER/SAMPLER pair is refused
before sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DIRECTION_KEY = "svd_inbetween_direction"
# What a request asks for (the returned x0 is always in forward time):
#   FORWARD   the forward path's guided x0 (start frame);
#   BACKWARD  the backward path's guided x0 (end frame, time-flipped and back);
#   DISTILLED MPD: no backward denoise; the forward residuals carried over to the backward
#             path, anchored on the end keyframe (samplers/steps.distilled_x0);
#   FUSED     both paths fused with the guider's weights (MPD on TRF: 1 -> 0 per frame).
FORWARD, BACKWARD, DISTILLED, FUSED = "forward", "backward", "distilled", "fused"
REQUESTS = (FORWARD, BACKWARD, DISTILLED, FUSED)
SAMPLER_MARK = "svd_inbetween_sampler"
ANSWERS_MARK = "svd_inbetween_answers_directions"


@dataclass
class DirectionRequest:
    """One request; the guider fills in, in forward time:
      uncond: the unconditional x0 a CFG++ step follows (FORWARD/DISTILLED/FUSED: the forward
              path's, BACKWARD: the backward path's; None if it was skipped at cfg 1);
      pins:   frame index -> clean keyframe latent [1, C, H, W] (model space) of the keyframe at
              the far end of the path the x0 belongs to (FORWARD: the end frame; BACKWARD and
              DISTILLED: the start frame; FUSED: none).
    """
    direction: str
    uncond: torch.Tensor | None = None
    pins: dict[int, torch.Tensor] | None = None


def sampler_kind(sampler) -> str | None:
    """Which pack sampler a SAMPLER (comfy KSAMPLER) is ("vibid", "mpd"), None for any other."""
    return getattr(getattr(sampler, "sampler_function", None), SAMPLER_MARK, None)


def answers_requests(guider) -> bool:
    return getattr(guider, ANSWERS_MARK, False) is True
