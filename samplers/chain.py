"""Keyframe chains: N keyframes -> one video of N-1 inbetween segments, sampled together.

All segments are windows on one chain latent (samplers/windows.py), denoised in lockstep
by one sampler loop (samplers/chain_guider.py): one seed, one noise tensor, one progress
bar, and at every model call the shared keyframe frames get the mean of both neighbours'
predictions.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..attention_patch.layers import with_proxies
from ..conditioning.keyframes import KeyframeEncoding, empty_video_latent, encode_keyframes
from .chain_guider import SVDInbetweenChainGuider
from .guider import SVDInbetweenGuider
from .run import check_conds, check_guider_settings, check_sampling_settings, log_run, run_guider, sampler_for
from .settings import GenerationSettings, KeyframeConds
from .request import check_video
from .validation import check_images, labelled
from .windows import boundaries, chain_windows, parse_frame_counts, with_frames

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher


def check_request(keyframes: list[tuple[str, torch.Tensor]], encoding: KeyframeEncoding, frames: str | int,
                  vae=None) -> list[int]:
    """A chain's shape before any tensor is made (the node calls it before fitting keyframes of several sizes):
    the frame counts, then the whole video as request.check_video sees it. -> the frame count of each segment."""
    counts = parse_frame_counts(frames, len(keyframes) - 1)
    check_video(encoding, "frames", chain_windows(counts)[-1][1], keyframes, vae)
    return counts


def sample_chain(node: str, model: ModelPatcher, clip_vision, vae, images: torch.Tensor, encoding: KeyframeEncoding,
                 frames: str | int, settings: GenerationSettings, callback: Callable | None = None) -> tuple[torch.Tensor, dict]:
    """The whole chain -> (IMAGE frames with each keyframe exactly at its boundary, LATENT).

    `frames`: one count for every segment or one per segment ('25' or '25,14,25').
    Keyframe conditioning is SVDInbetweenConditioning's (noise_seed = seed, one augmentation
    noise for every keyframe), so with two keyframes this is SVDInbetweenConditioning +
    SVDInbetweenSampler with the same seed, frame for frame.
    """
    with labelled(node):
        check_images(images)
        check_guider_settings(model, settings)
        check_sampling_settings(settings)
        counts = check_request([("images", image) for image in images], encoding, frames, vae)
        keys, conds = encode_keyframes(clip_vision, vae, [images[i:i + 1] for i in range(images.shape[0])],
                                       encoding, settings.seed, counts[0])
        windows = chain_windows(counts)
        latent = empty_video_latent(windows[-1][1], encoding.width, encoding.height)
        segments = []
        for k, ((start, stop), n) in enumerate(zip(windows, counts)):
            (ps, ns), (pe, ne) = conds[k], conds[k + 1]
            seg = KeyframeConds(*(with_frames(c, n) for c in (ps, ns, pe, ne)))
            check_conds(model, seg, latent[start:stop], settings)
            segments.append(seg)
        sampler = sampler_for(settings)
    m = with_proxies(model)
    guiders = []
    for seg in segments:
        g = SVDInbetweenGuider(m, mode=settings.mode, forward_weight=settings.forward_weight,
                               execution=settings.execution, node=node)
        g.set_conds(*seg)
        g.set_cfg(settings.cfg)
        guiders.append(g)
    log_run(node, settings)
    out = run_guider(SVDInbetweenChainGuider(guiders, windows), {"samples": latent}, settings, sampler, callback)
    return decode_with_keyframes(vae, out["samples"], torch.cat(keys), boundaries(windows)), out


def decode_with_keyframes(vae, samples: torch.Tensor, keys: torch.Tensor, at: list[int]) -> torch.Tensor:
    """VAE-decoded frames (as VAEDecode gives them) with frame at[k] replaced by keyframe k itself."""
    pixels = vae.decode(samples)
    if pixels.ndim == 5:
        pixels = pixels.reshape(-1, *pixels.shape[-3:])
    pixels = pixels.clone()
    for k, index in enumerate(at):
        pixels[index] = keys[k].to(pixels)
    return pixels
