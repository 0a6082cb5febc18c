"""One-step update rules of the alternating (ViBiD) schedule (plain torch)."""
from __future__ import annotations

import torch


def pin_frames(denoised: torch.Tensor, pins: dict[int, torch.Tensor]) -> torch.Tensor:
    """DDS endpoint consistency: the pinned frames of x0 replaced by the keyframe latents."""
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
