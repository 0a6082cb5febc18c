"""Facades: node inputs -> a guider, or all the way to sampled latents.

Every input is validated here, once, before any model call; errors are labelled with
the calling node's name (validation.labelled).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..attention_patch.layers import with_proxies
from .execution import EXECUTIONS
from .guidance import GUIDANCE, linear_cfg
from .guider import SVDInbetweenGuider
from .mpd import mpd_sampler
from .recurrent_euler import recurrent_euler_sampler
from .settings import GenerationSettings, KeyframeConds
from .validation import (check_choice, check_conds_fit_model, check_distillations, check_forward_weight, check_inputs,
                         check_model, check_recurrence, check_steps, labelled)
from .vibid import vibid_sampler

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

log = logging.getLogger(__name__)


def check_guider_settings(model: ModelPatcher, settings: GenerationSettings) -> None:
    """What any guider needs: an SVD model fit for the mode, a known execution and guidance."""
    check_model(model, settings.mode)
    check_choice("execution", settings.execution, EXECUTIONS)
    check_choice("guidance", settings.guidance, GUIDANCE)


def check_conds(model: ModelPatcher, conds: KeyframeConds, latent: torch.Tensor | None,
                settings: GenerationSettings) -> None:
    """Conds (and latent) that match each other, the model and a finite cfg."""
    check_inputs(conds._asdict(), latent, cfg=settings.cfg)
    check_conds_fit_model(model, conds._asdict())


def log_run(node: str, settings: GenerationSettings) -> None:
    """The settings a run samples at (steps and cfg resolved: 0 is the mode's own), in the host's log."""
    log.info("%s: mode %s, %d steps, cfg %g", node, settings.mode, settings.steps, settings.cfg)


def check_sampling_settings(settings: GenerationSettings) -> None:
    """What a whole run needs besides the guider: the schedule's own settings, scheduler and steps."""
    if settings.spec.fused:
        check_forward_weight(settings.forward_weight)
        check_recurrence(settings.recurrence, settings.recurrence_ratio)
    if settings.spec.sampler == "mpd":
        check_distillations(settings.mpd, settings.mpd_trf)
    check_choice("scheduler", settings.scheduler, comfy.samplers.SCHEDULER_NAMES)
    check_steps(settings.steps)


def build_guider(model: ModelPatcher, conds: KeyframeConds, settings: GenerationSettings,
                 node: str | None = None) -> SVDInbetweenGuider:
    """The dual-direction guider on a patched clone of `model` (inputs already checked)."""
    m = with_proxies(model)
    if settings.guidance == "linear":
        m.set_model_sampler_cfg_function(linear_cfg(settings.min_cfg))
    forward_weight = settings.forward_weight if settings.spec.fused else 0.5
    guider = SVDInbetweenGuider(m, mode=settings.mode, forward_weight=forward_weight, execution=settings.execution,
                                node=node)
    guider.set_conds(*conds)
    guider.set_cfg(settings.cfg)
    return guider


def sampler_for(settings: GenerationSettings) -> comfy.samplers.KSAMPLER:
    """The SAMPLER the mode's schedule needs: recurrent Euler (fused), ViBiD (alternating) or MPD."""
    if settings.spec.sampler == "mpd":
        return mpd_sampler(settings.cfg_pp, settings.dds, settings.mpd, settings.mpd_trf)
    if settings.spec.alternating:
        return vibid_sampler(settings.cfg_pp, settings.dds)
    return recurrent_euler_sampler(settings.recurrence, settings.recurrence_ratio)


def make_guider(node: str, model: ModelPatcher, conds: KeyframeConds, settings: GenerationSettings) -> SVDInbetweenGuider:
    """SVDInbetweenGuider node: the checked GUIDER for SamplerCustomAdvanced."""
    with labelled(node):
        check_guider_settings(model, settings)
        check_conds(model, conds, None, settings)
        check_forward_weight(settings.forward_weight)
    return build_guider(model, conds, settings, node)


def sample_inbetween(node: str, model: ModelPatcher, conds: KeyframeConds, latent: dict, settings: GenerationSettings,
                     callback: Callable | None = None) -> dict:
    """Any mode, all in one: checks, guider, the schedule's sampler, seeded sampling -> LATENT."""
    with labelled(node):
        check_guider_settings(model, settings)
        check_conds(model, conds, latent["samples"], settings)
        check_sampling_settings(settings)
        guider = build_guider(model, conds, settings, node)
        sampler = sampler_for(settings)
    log_run(node, settings)
    return run_guider(guider, latent, settings, sampler, callback)


def run_guider(guider: comfy.samplers.CFGGuider, latent: dict, settings: GenerationSettings,
               sampler: comfy.samplers.KSAMPLER, callback: Callable | None = None) -> dict:
    """Sigmas, seeded initial noise, progress bar, guider.sample -> a LATENT dict (as KSampler does)."""
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"),
                                             settings.scheduler, settings.steps)
    samples = comfy.sample.fix_empty_latent_channels(guider.model_patcher, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, settings.seed)
    if callback is None:
        callback = latent_preview.prepare_callback(guider.model_patcher, settings.steps)
    out = guider.sample(noise, samples, sampler, sigmas, callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=settings.seed)
    result = latent.copy()
    result["samples"] = out.to(comfy.model_management.intermediate_device())
    return result
