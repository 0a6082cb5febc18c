"""Classifier-free guidance shapes over frames."""
from __future__ import annotations

import torch

GUIDANCE = ("constant", "linear")


def linear_cfg(min_cfg: float):
    """sampler_cfg_function: scale rising linearly from min_cfg (first frame) to cfg (last frame).

    Same formula as ComfyUI's VideoLinearCFGGuidance. In the dual-direction guider it
    is applied in each direction's own time, so each branch ramps away from its keyframe.
    """
    def cfg_fn(args):
        cond, uncond, cond_scale = args["cond"], args["uncond"], args["cond_scale"]
        scale = torch.linspace(min_cfg, cond_scale, cond.shape[0], device=cond.device)
        return uncond + scale.reshape((cond.shape[0], 1, 1, 1)) * (cond - uncond)
    return cfg_fn
