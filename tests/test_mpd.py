"""Unit: Motion Prior Distillation's maths and schedule, plain torch."""
from __future__ import annotations

import pytest
import torch

from svd_inbetween.samplers.fusion import frame_ramp, fuse
from svd_inbetween.samplers.steps import distilled_x0


def authors_distillation(x_fwd, x0_fwd_c, sigma, latent_end):
    """Their text, in backward time: residuals of the forward path, re-anchored on the end keyframe."""
    x_bwd = x_fwd.flip(0)
    eps_fwd = (x_fwd - x0_fwd_c) / sigma
    eps_end = (x_bwd[:1] - latent_end) / (sigma[:1] if torch.is_tensor(sigma) and sigma.ndim else sigma)
    delta = eps_fwd[1:] - eps_fwd[:-1]
    target = -delta.flip(0)
    eps_bwd = torch.empty_like(eps_fwd)
    eps_bwd[:1] = eps_end
    eps_bwd[1:] = eps_bwd[0] + target.cumsum(0)
    return (x_bwd - sigma * eps_bwd).flip(0)  # back in forward time


def test_distilled_x0_is_the_authors_cumulative_sum_in_forward_time():
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(7, 4, 3, 5, generator=g) * 9, torch.randn(7, 4, 3, 5, generator=g)
    end = torch.randn(1, 4, 3, 5, generator=g)
    for sigma in (torch.tensor(7.5), torch.full((7,), 0.3)):
        ours = distilled_x0(x, x0, sigma, end)
        ref = authors_distillation(x, x0, sigma.reshape(-1, 1, 1, 1) if sigma.ndim else sigma, end)
        assert (ours - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_distillation_shifts_the_forward_x0_onto_the_end_keyframe():
    """Telescoping the sum: the distilled x0 is the forward x0 shifted so its last frame is the end latent."""
    g = torch.Generator().manual_seed(1)
    x, x0 = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    end = torch.randn(1, 4, 3, 3, generator=g)
    ours = distilled_x0(x, x0, 2.0, end)
    assert (ours - (x0 + (end - x0[-1:]))).abs().max().item() < 1e-5
    assert (ours[-1] - end[0]).abs().max().item() < 1e-5
    # a forward prediction that already ends on the keyframe is kept
    x0[-1] = end[0]
    assert (distilled_x0(x, x0, 2.0, end) - x0).abs().max().item() < 1e-5


def test_frame_ramp_fusion_is_the_authors_linspace():
    g = torch.Generator().manual_seed(2)
    f, b = torch.randn(6, 4, 2, 2, generator=g), torch.randn(6, 4, 2, 2, generator=g)
    w = torch.linspace(1.0, 0.0, steps=6)[:, None, None, None]
    assert torch.equal(fuse(f, b, frame_ramp(6, f)), w * f + (1.0 - w) * b)
    fused = fuse(f, b, frame_ramp(6, f))
    assert torch.equal(fused[0], f[0]) and torch.equal(fused[-1], b[-1])


@pytest.mark.parametrize("steps,fraction,expected", [(25, 0.1, [0, 1, 2]), (25, 0.2, [0, 1, 2, 3, 4]),
                                                     (6, 0.2, [0, 1]), (6, 0.1, [0]), (10, 0.0, [])])
def test_distilling_steps_compare_as_floats(steps, fraction, expected):
    from svd_inbetween.samplers.mpd import distils
    assert [i for i in range(steps) if distils(i, steps, fraction)] == expected


def test_requests_per_step_at_the_authors_constants():
    from svd_inbetween.samplers.mpd import unet_requests
    from svd_inbetween.samplers.settings import MPD_SEQ, MPD_TRF
    seq = unet_requests("mpd", 25, MPD_SEQ)
    assert seq[0] == ["distilled"] * 3 + ["forward", "backward"] and seq[4] == seq[0]
    assert seq[5] == ["forward", "backward"] and sum(map(len, seq)) == 5 * 5 + 20 * 2
    trf = unet_requests("mpd_trf", 25, MPD_TRF)
    assert trf[2] == ["distilled", "forward", "backward"] and trf[3] == ["fused"] * 4
    assert sum(map(len, trf)) == 3 * 3 + 22 * 4
