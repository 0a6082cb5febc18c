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
  dds:    endpoint consistency -- the far keyframe's frame of the denoised prediction becomes
          the clean keyframe's latent (the authors' conjugate-gradient solve in closed form,
          see steps.pin_frames).

The MPD sampler (samplers/mpd.py) is built from the same request steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import trange

import comfy.model_management
import comfy.samplers

from .protocol import BACKWARD, DIRECTION_KEY, FORWARD, SAMPLER_MARK, DirectionRequest, answers_requests
from .schedule import recurrence_noise_sampler, renoise_std
from .steps import cfgpp_step, pin_frames
from .validation import fail


@dataclass
class RequestSteps:
    """Steps of a sampler that sends DirectionRequests to the dual-direction guider.

    `node`: the node that made the SAMPLER, named in the errors (they fire inside
    SamplerCustomAdvanced)."""
    model: object
    extra_args: dict
    s_in: torch.Tensor
    noise_sampler: object
    cfg_pp: bool
    node: str | None

    @classmethod
    def start(cls, model, x, extra_args, noise_sampler, cfg_pp: bool, node: str | None, what: str) -> RequestSteps:
        """Checks the GUIDER (before any model call) and prepares the options every request carries."""
        guider = getattr(model, "inner_model", None)
        if guider is not None and not answers_requests(guider):
            fail("sampler", f"the {what} sampler needs the SVD Inbetween Guider as GUIDER (a stock guider cannot "
                 "denoise one direction at a time)", node=node)
        extra_args = {} if extra_args is None else extra_args
        options = dict(extra_args.get("model_options", {}))
        if cfg_pp:
            options["disable_cfg1_optimization"] = True  # CFG++ needs the unconditional x0 even at cfg 1
        if noise_sampler is None:
            noise_sampler = recurrence_noise_sampler(x, extra_args.get("seed"))
        return cls(model, dict(extra_args, model_options=options), x.new_ones([x.shape[0]]), noise_sampler,
                   cfg_pp, node)

    def step(self, x, sigma, sigma_next, direction: str, dds: bool):
        """One request at sigma, then the (CFG++) step to sigma_next -> (x_next, the request's x0)."""
        request = DirectionRequest(direction)
        options = {**self.extra_args["model_options"], DIRECTION_KEY: request}
        x0 = self.model(x, sigma * self.s_in, **dict(self.extra_args, model_options=options))
        if request.pins is None:
            fail("sampler", "the guider did not answer a direction request; use the SVD Inbetween Guider",
                 node=self.node)
        toward = request.uncond if self.cfg_pp and request.uncond is not None else x0
        return cfgpp_step(x, pin_frames(x0, request.pins) if dds else x0, toward, sigma, sigma_next), x0

    def renoise(self, x, sigma, sigma_next):
        """x at sigma_next back to sigma with one fresh draw of the noise sampler."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        return x + self.noise_sampler(sigma, sigma_next) * renoise_std(sigma, sigma_next)

    def alternating(self, x, sigma, sigma_next, dds: bool):
        """ViBiD's step: forward half, re-noise, backward half -> (x_next, the backward x0)."""
        x, _ = self.step(x, sigma, sigma_next, FORWARD, dds)
        x = self.renoise(x, sigma, sigma_next)
        return self.step(x, sigma, sigma_next, BACKWARD, dds)


@torch.no_grad()
def sample_vibid(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 cfg_pp: bool = True, dds: bool = True, node: str | None = None):
    """k-diffusion style sampler; `model` must wrap an SVD inbetween guider.

    noise_sampler(sigma, sigma_next) gives the unit noise of each re-noising; by default the
    seed's recurrence stream (schedule.recurrence_noise_sampler)."""
    steps = RequestSteps.start(model, x, extra_args, noise_sampler, cfg_pp, node, "ViBiD")
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_start = x
        x, x0 = steps.alternating(x, sigma, sigma_next, dds)
        if callback is not None:
            callback({"x": x_start, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x0})
    return x


setattr(sample_vibid, SAMPLER_MARK, "vibid")


def vibid_sampler(cfg_pp: bool = True, dds: bool = True, node: str | None = None) -> comfy.samplers.KSAMPLER:
    """The ViBiD SAMPLER; `node` (the node making it) is named in its run-time errors."""
    return comfy.samplers.KSAMPLER(sample_vibid, extra_options={"cfg_pp": bool(cfg_pp), "dds": bool(dds), "node": node})
