"""ViBiD: sequential bidirectional sampling (Yang et al., ICLR 2025) on the dual-direction guider.

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

This module imports ComfyUI only inside functions, so the maths is testable without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import trange

from .schedule import recurrence_generator, renoise_std

# model_options key under which a sampler asks the guider for one direction only.
DIRECTION_KEY = "svd_inbetween_direction"
FORWARD, BACKWARD = "forward", "backward"
# Modes whose directions are denoised one after the other; the value is the rotation
# ("trf": none, "gi": rotated maps + W_v'/W_o') that their backward denoise uses.
SEQUENTIAL_MODES = {"vibid": "trf", "vibid_gi": "gi"}
# Attribute on sampler functions that send DirectionRequests (checked by the guider).
SEQUENTIAL_MARK = "svd_inbetween_sequential"
# Attribute on guiders that answer them.
ANSWERS_MARK = "svd_inbetween_answers_directions"


@dataclass
class DirectionRequest:
    """A sampler asking for ONE direction's guided x0 instead of the fused one.

    Passed in model_options[DIRECTION_KEY]; the guider fills in, in forward time:
      uncond: that direction's unconditional x0 (None if it skipped it at cfg 1);
      pins:   frame index -> keyframe latent [1, C, H, W] (model space) of the keyframe
              at the far end of this direction (forward: the end frame, backward: the start).
    """
    direction: str
    uncond: torch.Tensor | None = None
    pins: dict[int, torch.Tensor] | None = None


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


@torch.no_grad()
def sample_vibid(model, x, sigmas, extra_args=None, callback=None, disable=None, cfg_pp: bool = True,
                 dds: bool = True):
    """k-diffusion style sampler; `model` must wrap an SVD inbetween guider."""
    import comfy.model_management

    from .validation import fail

    extra_args = {} if extra_args is None else extra_args
    guider = getattr(model, "inner_model", None)
    if guider is not None and not getattr(guider, ANSWERS_MARK, False):
        fail("SVDInbetweenViBiDSampler", "sampler", "the ViBiD sampler needs the SVD Inbetween Guider as GUIDER "
             "(a stock guider cannot denoise one direction at a time)")
    options = dict(extra_args.get("model_options", {}))
    if cfg_pp:
        options["disable_cfg1_optimization"] = True  # CFG++ needs the unconditional x0 even at cfg 1
    s_in = x.new_ones([x.shape[0]])
    generator = recurrence_generator(extra_args.get("seed"))

    def half_step(x, sigma, sigma_next, direction):
        request = DirectionRequest(direction)
        x0 = model(x, sigma * s_in, **dict(extra_args, model_options={**options, DIRECTION_KEY: request}))
        if request.pins is None:
            fail("SVDInbetweenViBiDSampler", "sampler", "the guider did not answer a one-direction request; "
                 "use the SVD Inbetween Guider")
        toward = request.uncond if cfg_pp and request.uncond is not None else x0
        return cfgpp_step(x, pin_frames(x0, request.pins) if dds else x0, toward, sigma, sigma_next), x0

    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_start = x
        x, _ = half_step(x, sigma, sigma_next, FORWARD)
        comfy.model_management.throw_exception_if_processing_interrupted()
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x = x + eps * renoise_std(sigma, sigma_next)
        x, x0 = half_step(x, sigma, sigma_next, BACKWARD)
        if callback is not None:
            callback({"x": x_start, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x0})
    return x


setattr(sample_vibid, SEQUENTIAL_MARK, True)


def vibid_sampler(cfg_pp: bool = True, dds: bool = True):
    import comfy.samplers
    return comfy.samplers.KSAMPLER(sample_vibid, extra_options={"cfg_pp": bool(cfg_pp), "dds": bool(dds)})


def sample_vibid_inbetween(node: str, model, positive_start, negative_start, positive_end, negative_end,
                           latent: dict, seed: int, steps: int, cfg: float, mode: str = "vibid",
                           execution: str = "auto", scheduler: str = "karras", guidance: str = "constant",
                           min_cfg: float = 1.0, cfg_pp: bool = True, dds: bool = True, callback=None) -> dict:
    """The all-in-one ViBiD run: same inputs as samplers.run.sample_inbetween, no recurrence or fusion weight."""
    from .run import make_guider
    from .validation import check_inputs, check_model, fail

    if mode not in SEQUENTIAL_MODES:
        fail(node, "mode", f"{mode!r} is not a ViBiD mode ({', '.join(SEQUENTIAL_MODES)})")
    check_model(node, model, mode)
    check_inputs(node, {"positive_start": positive_start, "positive_end": positive_end}, latent["samples"],
                 steps=steps)
    guider = make_guider(node, model, positive_start, negative_start, positive_end, negative_end, cfg, mode,
                         0.5, execution, guidance, min_cfg)
    from .run import run_guider
    return run_guider(node, guider, latent, seed, steps, scheduler, vibid_sampler(cfg_pp, dds), callback)
