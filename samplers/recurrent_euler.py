"""Euler (EDM) sampling with the paper's recurrence (noise re-injection).

During the first `recurrence_ratio` of the steps, each step sigma_i -> sigma_{i+1}
is repeated `recurrence` more times: re-noise x from sigma_{i+1} back to sigma_i
with fresh noise, then take the same step again.
"""
from __future__ import annotations

import torch
from tqdm.auto import trange

import comfy.model_management
import comfy.samplers
from comfy.k_diffusion.sampling import to_d

from .schedule import recurrence_noise_sampler, renoise_std, repeats_per_step
from .validation import check_recurrence


@torch.no_grad()
def sample_recurrent_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           recurrence: int = 5, recurrence_ratio: float = 0.5):
    """k-diffusion style sampler. With recurrence=0 it is ComfyUI's `euler` step for step.

    noise_sampler(sigma, sigma_next) gives the unit noise of each re-injection; by default
    the seed's recurrence stream (schedule.recurrence_noise_sampler)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    repeats = repeats_per_step(steps, recurrence, recurrence_ratio)
    if noise_sampler is None and any(repeats):
        noise_sampler = recurrence_noise_sampler(x, extra_args.get("seed"))
    for i in trange(steps, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_start = x
        for r in range(repeats[i] + 1):
            if r > 0:
                comfy.model_management.throw_exception_if_processing_interrupted()
                x = x + noise_sampler(sigma, sigma_next) * renoise_std(sigma, sigma_next)
            denoised = model(x, sigma * s_in, **extra_args)
            if r == 0 and callback is not None:
                callback({"x": x_start, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
            d = to_d(x, sigma, denoised)
            x = x + d * (sigma_next - sigma)
    return x


def recurrent_euler_sampler(recurrence: int = 5, recurrence_ratio: float = 0.5) -> comfy.samplers.KSAMPLER:
    """The SAMPLER; a bad setting is reported against the `recurrence` input."""
    check_recurrence(recurrence, recurrence_ratio)
    return comfy.samplers.KSAMPLER(sample_recurrent_euler,
                                   extra_options={"recurrence": recurrence, "recurrence_ratio": recurrence_ratio})
