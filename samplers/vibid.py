"""ViBiD (Yang et al., ICLR 2025), the "alternating" schedule, on the dual-direction guider.

The paper calls it sequential sampling; here "sequential" names only an execution (two
UNet calls per fused step, samplers/execution.py), so this schedule is "alternating".

Each step sigma_i -> sigma_{i+1}:
  1. forward denoise of x (conditioned on the start frame), Euler/CFG++ step to sigma_{i+1};
  2. re-noise back to sigma_i with fresh seeded noise;
  3. backward denoise of the time-flipped latent (conditioned on the end frame), step to
     sigma_{i+1}, flip back.
Two UNet calls per step instead of the fused scheme's one call of both directions plus
recurrence. The flips happen inside the guider (direction_wrapper), so this loop works in
forward time throughout; every operation here commutes with a time flip.

Options (both on in the authors' code):
  cfg_pp: CFG++ -- the step keeps the guided x0 but re-noises along the *unconditional*
          prediction, x_next = x0_guided + (x - x0_uncond) / sigma * sigma_next.
  dds:    endpoint consistency -- the authors solve a masked least-squares problem with a
          few conjugate-gradient iterations that replace the far keyframe's frame of the
          denoised prediction; CG converges in one iteration for a frame mask, so this is
          the closed form: that frame becomes the keyframe's latent.

"""
from __future__ import annotations

import torch
from tqdm.auto import trange

import comfy.model_management
import comfy.samplers

from .protocol import BACKWARD, DIRECTION_KEY, FORWARD, SENDS_REQUESTS_MARK, DirectionRequest, answers_requests
from .schedule import recurrence_noise_sampler, renoise_std
from .steps import cfgpp_step, pin_frames
from .validation import fail


@torch.no_grad()
def sample_vibid(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 cfg_pp: bool = True, dds: bool = True, node: str | None = None):
    """k-diffusion style sampler; `model` must wrap an SVD inbetween guider.

    noise_sampler(sigma, sigma_next) gives the unit noise of each re-noising; by default the
    seed's recurrence stream (schedule.recurrence_noise_sampler). `node`: the node that made
    this SAMPLER, named in the errors below (they fire inside SamplerCustomAdvanced)."""
    extra_args = {} if extra_args is None else extra_args
    guider = getattr(model, "inner_model", None)
    if guider is not None and not answers_requests(guider):
        fail("sampler", "the ViBiD sampler needs the SVD Inbetween Guider as GUIDER (a stock guider cannot denoise "
             "one direction at a time)", node=node)
    options = dict(extra_args.get("model_options", {}))
    if cfg_pp:
        options["disable_cfg1_optimization"] = True  # CFG++ needs the unconditional x0 even at cfg 1
    s_in = x.new_ones([x.shape[0]])
    if noise_sampler is None:
        noise_sampler = recurrence_noise_sampler(x, extra_args.get("seed"))

    def half_step(x, sigma, sigma_next, direction):
        request = DirectionRequest(direction)
        x0 = model(x, sigma * s_in, **dict(extra_args, model_options={**options, DIRECTION_KEY: request}))
        if request.pins is None:
            fail("sampler", "the guider did not answer a one-direction request; use the SVD Inbetween Guider",
                 node=node)
        toward = request.uncond if cfg_pp and request.uncond is not None else x0
        return cfgpp_step(x, pin_frames(x0, request.pins) if dds else x0, toward, sigma, sigma_next), x0

    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_start = x
        x, _ = half_step(x, sigma, sigma_next, FORWARD)
        comfy.model_management.throw_exception_if_processing_interrupted()
        x = x + noise_sampler(sigma, sigma_next) * renoise_std(sigma, sigma_next)
        x, x0 = half_step(x, sigma, sigma_next, BACKWARD)
        if callback is not None:
            callback({"x": x_start, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x0})
    return x


setattr(sample_vibid, SENDS_REQUESTS_MARK, True)


def vibid_sampler(cfg_pp: bool = True, dds: bool = True, node: str | None = None) -> comfy.samplers.KSAMPLER:
    """The ViBiD SAMPLER; `node` (the node making it) is named in its run-time errors."""
    return comfy.samplers.KSAMPLER(sample_vibid, extra_options={"cfg_pp": bool(cfg_pp), "dds": bool(dds), "node": node})
