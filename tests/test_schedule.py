"""Unit: the recurrence schedule, its noise, and the fusion."""
import pytest
import torch

from svd_inbetween.samplers.fusion import fuse
from svd_inbetween.samplers.schedule import recurrence_generator, renoise_std, repeats_per_step


def test_paper_schedule_50_steps():
    r = repeats_per_step(50, 5, 0.5)
    assert r[:25] == [5] * 25 and r[25:] == [0] * 25
    assert 50 + sum(r) == 175  # fused evaluations per clip in the paper's setting


def test_no_recurrence():
    assert repeats_per_step(7, 0, 0.5) == [0] * 7
    assert repeats_per_step(7, 3, 0.0) == [0] * 7
    assert repeats_per_step(4, 2, 1.0) == [2] * 4


@pytest.mark.parametrize("bad", [(-1, 0.5), (1, 1.5), (1, -0.1)])
def test_schedule_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        repeats_per_step(10, *bad)


def test_renoise_restores_variance():
    s, sn = torch.tensor(3.0), torch.tensor(2.0)
    assert torch.isclose(renoise_std(s, sn) ** 2 + sn ** 2, s ** 2)
    assert renoise_std(torch.tensor(1.0), torch.tensor(0.0)) == 1.0


def test_recurrence_noise_is_seeded_and_not_the_initial_noise():
    a = torch.randn(4, generator=recurrence_generator(7))
    b = torch.randn(4, generator=recurrence_generator(7))
    c = torch.randn(4, generator=recurrence_generator(8))
    initial = torch.randn(4, generator=torch.manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, initial)


def test_fuse_endpoints_exact_and_average():
    f, b = torch.randn(3, 4), torch.randn(3, 4)
    assert fuse(f, b, 1.0) is f and fuse(f, b, 0.0) is b
    assert torch.allclose(fuse(f, b, 0.5), (f + b) / 2)
