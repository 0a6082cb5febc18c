"""One-step update rules of the alternating (ViBiD) and MPD schedules (plain torch)."""
from __future__ import annotations

import torch


def pin_frames(denoised: torch.Tensor, pins: dict[int, torch.Tensor]) -> torch.Tensor:
    """DDS endpoint consistency: the pinned frames of x0 replaced by the keyframe latents.

    The authors solve min ||M x - M y|| (M masks one frame) with 5 conjugate-gradient
    iterations started at x0. For a frame mask CG ends after its first iteration: r = M(y - x0),
    p = r, Mp = p, so the step length is <r, r> / <p, Mp> = 1, x0 + p puts y into the masked
    frame exactly and leaves the others, and the new residual is 0 (their loop breaks there).
    This is that result in closed form (and it has no 0/0 when x0 already equals y)."""
    if not pins:
        return denoised
    out = denoised.clone()
    for index, latent in pins.items():
        out[index] = latent.reshape(out.shape[1:]).to(out)
    return out


def cfgpp_step(x: torch.Tensor, x0: torch.Tensor, toward: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """x0 + (x - toward) / sigma * sigma_next.

    toward = x0 (unpinned) is the plain Euler step; toward = the unconditional x0 is CFG++.
    """
    return x0 + (x - toward) / sigma * sigma_next


def distilled_x0(x: torch.Tensor, x0_forward: torch.Tensor, sigma: torch.Tensor | float,
                 end_latent: torch.Tensor) -> torch.Tensor:
    """Motion Prior Distillation: the backward path's x0 without a backward denoise, in forward time.

    The forward path's residual eps = (x - x0_forward) / sigma carries its motion. The backward
    path starts at the end keyframe (its residual at the last frame is (x - end) / sigma) and
    takes the forward residual's frame-to-frame differences, time-reversed and negated, as its
    own (a cumulative sum from the last frame back to the first, in the authors' order). Then
    x0 = x - sigma * residual. `sigma`: a number or one value per frame [T].
    """
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))) if torch.is_tensor(sigma) and sigma.ndim else sigma
    eps = (x - x0_forward) / s
    residual = torch.empty_like(eps)
    last = s[-1] if torch.is_tensor(s) and s.ndim else s
    residual[-1] = (x[-1] - end_latent.reshape(x.shape[1:]).to(x)) / last
    # backward time k = T-1-m: its differences are eps[m] - eps[m+1], accumulated from m = T-2 down
    differences = eps[:-1] - eps[1:]
    residual[:-1] = residual[-1] + differences.flip(0).cumsum(0).flip(0)
    return x - s * residual
