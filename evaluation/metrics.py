"""Per-frame fidelity to the ground truth: PSNR and SSIM on [T, H, W, 3] clips in [0, 1].

SSIM follows Wang et al. 2004 as torchmetrics and scikit-image (gaussian_weights) compute it: an 11x11 Gaussian
window with sigma 1.5, K1 = 0.01, K2 = 0.03, per channel, averaged over the valid (unpadded) window positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"metrics: clips must both be [T, H, W, C] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per frame, [T]; identical frames give +inf."""
    _check(a, b)
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per frame, [T]."""
    _check(a, b)
    if min(a.shape[1:3]) < window:
        raise ValueError(f"metrics: SSIM needs frames of at least {window}x{window} pixels, got {tuple(a.shape[1:3])}")
    x, y = (t.double().movedim(-1, 1) for t in (a, b))
    c = x.shape[1]
    w = _gaussian_window(window, sigma).to(x.device).expand(c, 1, window, window)

    def blur(t):
        return F.conv2d(t, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
