"""Motion Prior Distillation (Jeon et al., ICLR 2026) on the dual-direction guider.

Written from the authors' loops (GitHub vvsjeon/MPDsampler: mpd_seq.py = schedule "mpd",
mpd_par.py = schedule "mpd_trf"); same weights, sigmas and noise give the same latents
(tests/test_host_mpd.py holds a reference of each loop). Each step sigma_i -> sigma_{i+1}:

mpd (on ViBiD), while i < fraction * steps (authors: 0.2):
    `iterations` times (authors: 3): the forward path is denoised, its residuals are carried
    over to the backward path anchored on the end keyframe (no backward denoise;
    steps.distilled_x0), the start frame is pinned (DDS), a CFG++ step along the forward
    unconditional x0, and a re-noise back to sigma_i;
  then (every step) ViBiD's alternating step (samplers/vibid.py).
mpd_trf (on TRF), while i < fraction * steps (authors: 0.1): `iterations` (authors: 1)
  distillations, then the alternating step; later steps: `repeats` (authors: 3) fused passes
  x0 = w * x0_fwd + (1 - w) * x0_bwd, w = 1 -> 0 over the frames, each a CFG++ step along the
  forward unconditional x0 and a re-noise, then a final fused pass; no DDS in them.

The step index and `fraction * steps` count the sigmas this SAMPLER gets: after SplitSigmas each
part starts again at step 0 (the authors always run the whole schedule).
Neither loop applies CFG (their x0 is the conditional one): cfg 1.0 here. At other cfg the
guided x0 takes its place. One fresh noise per re-noise, drawn from `noise_sampler(sigma,
sigma_next)` in the authors' order: 4 per distilling step of mpd at the defaults (3 + the
alternating step's one), 1 per later step; mpd_trf 2 per distilling step, 3 per later step.
Deviations from their text, with the proof of equality in the tests: the DDS conjugate
gradient in closed form (steps.pin_frames); the loop runs in forward time (the guider
flips the backward path), and every operation commutes with the flip; at cfg 1 a fused
request skips the backward unconditional denoise, which their loop computes and never uses.
"""
from __future__ import annotations

import torch
from tqdm.auto import trange

import comfy.samplers

from .protocol import BACKWARD, DISTILLED, FORWARD, FUSED, SAMPLER_MARK
from .settings import MPD_SEQ, MPD_TRF, Distillation
from .validation import check_distillations, fail
from .vibid import RequestSteps

MPD_SCHEDULES = ("mpd", "mpd_trf")


def distils(i: int, steps: int, fraction: float) -> bool:
    """Whether step i distils: i < fraction * steps, as the authors compare (0.1 * 25 = 2.5: steps 0-2)."""
    return i < fraction * steps


def unet_requests(schedule: str, steps: int, constants: Distillation) -> list[list[str]]:
    """The requests each step sends, in order: the one description of both loops (sample_mpd runs it, the
    bench counts UNet calls from it). Every request but a step's last is followed by a re-noise to sigma_i."""
    out = []
    for i in range(steps):
        if distils(i, steps, constants.fraction):
            out.append([DISTILLED] * constants.iterations + [FORWARD, BACKWARD])
        elif schedule == "mpd":
            out.append([FORWARD, BACKWARD])
        else:
            out.append([FUSED] * (constants.repeats + 1))
    return out


def guider_schedule(model, node: str | None) -> str:
    schedule = getattr(getattr(getattr(model, "inner_model", None), "mode", None), "schedule", None)
    if schedule not in MPD_SCHEDULES:
        fail("sampler", f"the MPD sampler needs the SVD Inbetween Guider in mode mpd, mpd_trf or mpd_gi, got "
             f"{schedule or 'another guider'}", node=node)
    return schedule


@torch.no_grad()
def sample_mpd(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
               cfg_pp: bool = True, dds: bool = True, mpd: Distillation = MPD_SEQ, mpd_trf: Distillation = MPD_TRF,
               node: str | None = None):
    """k-diffusion style sampler; `model` must wrap an SVD inbetween guider in an MPD mode, whose
    schedule picks the loop (mpd or mpd_trf) and so the constants. dds pins the keyframes in the
    distillation and alternating steps (the authors always do)."""
    steps = RequestSteps.start(model, x, extra_args, noise_sampler, cfg_pp, node, "MPD")
    schedule = guider_schedule(model, node)
    constants = mpd if schedule == "mpd" else mpd_trf
    per_step = unet_requests(schedule, len(sigmas) - 1, constants)
    for i in trange(len(per_step), disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_start = x
        for k, request in enumerate(per_step[i]):
            if k:
                x = steps.renoise(x, sigma, sigma_next)
            x, x0 = steps.step(x, sigma, sigma_next, request, dds)  # a FUSED answer has no pins
        if callback is not None:
            callback({"x": x_start, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x0})
    return x


setattr(sample_mpd, SAMPLER_MARK, "mpd")


def mpd_sampler(cfg_pp: bool = True, dds: bool = True, mpd: Distillation = MPD_SEQ, mpd_trf: Distillation = MPD_TRF,
                node: str | None = None) -> comfy.samplers.KSAMPLER:
    """The MPD SAMPLER (constants checked here, named as the node's inputs)."""
    check_distillations(mpd, mpd_trf)
    return comfy.samplers.KSAMPLER(sample_mpd, extra_options={"cfg_pp": bool(cfg_pp), "dds": bool(dds), "mpd": mpd,
                                                              "mpd_trf": mpd_trf, "node": node})
