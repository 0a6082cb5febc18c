"""The recurrence schedule and its noise (plain torch, no ComfyUI)."""
from __future__ import annotations

from typing import Callable

import torch

# Recurrence noise must not reuse the initial-noise stream (same seed, CPU generator).
NOISE_STREAM = 0x6B17_5EED


def repeats_per_step(steps: int, recurrence: int, recurrence_ratio: float) -> list[int]:
    """How many extra passes each step gets: `recurrence` for i < int(steps * ratio)."""
    if recurrence < 0 or not 0.0 <= recurrence_ratio <= 1.0:
        raise ValueError("recurrence must be >= 0 and recurrence_ratio in [0, 1]")
    last = int(steps * recurrence_ratio)
    return [recurrence if i < last else 0 for i in range(steps)]


def fused_evaluations(steps: int, recurrence: int, recurrence_ratio: float) -> int:
    """Model evaluations of a run: one per step plus the recurrence passes."""
    return steps + sum(repeats_per_step(steps, recurrence, recurrence_ratio))


def renoise_std(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Std of the noise that takes a sample at sigma_next back to sigma."""
    return (sigma ** 2 - sigma_next ** 2).clamp(min=0).sqrt()


def recurrence_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(((seed or 0) + NOISE_STREAM) % (2 ** 63))
    return g


def recurrence_noise_sampler(x: torch.Tensor, seed: int | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A k-diffusion noise_sampler(sigma, sigma_next) -> unit noise shaped like x, drawn on the CPU
    from the seed's recurrence stream (so a seed gives the same video on every device)."""
    generator = recurrence_generator(seed)

    def noise_sampler(sigma, sigma_next) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return noise_sampler
