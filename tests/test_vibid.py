"""Unit: ViBiD's endpoint pinning (DDS) and step, plain torch."""
from __future__ import annotations

import torch

from svd_inbetween.samplers.steps import cfgpp_step, pin_frames


def authors_dds(x: torch.Tensor, latent: torch.Tensor, frame: int, n_inner: int = 5, eps: float = 1e-5):
    """The authors' formulation: solve A^T A z = A^T y by conjugate gradients from z = x, A = frame mask."""
    def mask(z):
        m = torch.zeros_like(z)
        m[frame] = 1
        return z * m
    y = torch.zeros_like(x)
    y[frame] = latent
    b = mask(y)
    z = x.clone()
    r = b - mask(mask(z))
    p = r.clone()
    rs_old = (r * r).sum()
    for _ in range(n_inner):
        ap = mask(mask(p))
        a = rs_old / (p * ap).sum()
        z = z + a * p
        r = r - a * ap
        rs_new = (r * r).sum()
        if rs_new.sqrt() < eps:
            break
        p = r + rs_new / rs_old * p
        rs_old = rs_new
    return z


def test_pin_frames_is_the_closed_form_of_the_authors_cg():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(7, 4, 5, 6, generator=g)
    latent = torch.randn(1, 4, 5, 6, generator=g)
    for frame in (0, 6):
        ours = pin_frames(x0, {frame: latent})
        ref = authors_dds(x0, latent[0], frame)
        assert (ours - ref).abs().max().item() < 1e-5
        assert torch.equal(ours[frame], latent[0])
        keep = [i for i in range(7) if i != frame]
        assert torch.equal(ours[keep], x0[keep])
    assert pin_frames(x0, {}) is x0
    before = x0.clone()
    pin_frames(x0, {3: latent})
    assert torch.equal(x0, before)  # the prediction itself is not modified


def test_step_without_cfg_pp_is_euler_and_cfg_pp_moves_along_uncond():
    g = torch.Generator().manual_seed(1)
    x, x0, u = (torch.randn(5, 4, 3, 3, generator=g) for _ in range(3))
    sigma, nxt = torch.tensor(3.0), torch.tensor(1.5)
    euler = x + (x - x0) / sigma * (nxt - sigma)
    assert (cfgpp_step(x, x0, x0, sigma, nxt) - euler).abs().max().item() < 1e-5
    assert torch.allclose(cfgpp_step(x, x0, u, sigma, nxt), x0 + (x - u) / 3.0 * 1.5)
    assert torch.equal(cfgpp_step(x, x0, u, sigma, torch.tensor(0.0)), x0)
