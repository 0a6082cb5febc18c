"""Fréchet distance between two Gaussians fitted to feature sets (FID over frames, FVD over clips).

d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), with the trace of the matrix square root taken
from the eigenvalues of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2), which stays real
and stable where scipy's sqrtm of the non-symmetric product needs a complex fallback.
"""
from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, D] features -> (mean [D], unbiased covariance [D, D]) in float64."""
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).double()
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"Fréchet distance: need at least 2 feature vectors as [N, D], got shape {tuple(x.shape)}")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t).double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Fréchet distance: feature sizes differ ({tuple(mu1.shape)} vs {tuple(mu2.shape)}); "
                         "both sets must come from the same extractor")
    root1 = _sqrt_psd(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross
    return float(d.clamp(min=0))


def frechet_from_features(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two [N, D] feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
