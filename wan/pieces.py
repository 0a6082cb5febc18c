"""A keyframe layout through ComfyUI's Wan VAE: the conditioning latent, the mask, and the decode back to the clip.

Only the VAE's public calls (`encode`, `decode`, its compression figures) are used, once per causal piece of the
layout (wan/layout.py `KeyframeLayout.pieces`). In the separate layout every piece starts at a keyframe, so each
keyframe's latent frame is the VAE's encoding of that keyframe alone, and each piece decodes to exactly its own
frames: the clip comes back with every keyframe at its position.
"""
from __future__ import annotations

import torch

from .layout import TIME_STRIDE, KeyframeLayout

GREY = 0.5  # the frames to generate, in [0, 1]: what WanImageToVideo / WanFirstLastFrameToVideo put there
WAN21_LATENT_CHANNELS = 16
# Where a latent from the keyframe conditioning keeps its layout; samplers copy a LATENT's other keys along.
LAYOUT_KEY = "inbetween_wan_layout"


def is_wan21_vae(vae) -> bool:
    """Wan 2.1's VAE (also Wan 2.2 A14B's): 16 latent channels, 4 frames and 8 pixels per latent element."""
    return (getattr(vae, "latent_channels", None) == WAN21_LATENT_CHANNELS
            and vae.temporal_compression_decode() == TIME_STRIDE and vae.spacial_compression_encode() == 8)


def keyframe_clip(layout: KeyframeLayout, images: torch.Tensor) -> torch.Tensor:
    """[frames, H, W, 3]: grey everywhere but the keyframes (images[i] at layout.positions[i])."""
    clip = torch.full((layout.frames, *images.shape[1:3], 3), GREY, dtype=images.dtype)
    clip[list(layout.positions)] = images[..., :3]
    return clip


def encode(vae, layout: KeyframeLayout, images: torch.Tensor) -> torch.Tensor:
    """The conditioning latent [1, 16, latent frames, H/8, W/8]: each causal piece of the keyframe clip encoded
    on its own, concatenated in time."""
    clip = keyframe_clip(layout, images)
    return torch.cat([vae.encode(clip[a:b]) for a, b in layout.pieces()], dim=2)


def concat_mask(layout: KeyframeLayout, strengths: tuple[float, ...], height: int, width: int) -> torch.Tensor:
    """ComfyUI's `concat_mask` [1, 4, latent frames, H/8, W/8]: 1 where the model generates, 1 - strength at a
    keyframe's slots (the Wan model is given 1 - concat_mask)."""
    known = layout.known(strengths)
    return (1.0 - known)[None, :, :, None, None].expand(1, TIME_STRIDE, layout.latent_frames, height, width).clone()


def layout_record(layout: KeyframeLayout) -> dict:
    return {"layout": layout.layout, "frames": layout.frames, "positions": list(layout.positions)}


def layout_from_record(record: dict) -> KeyframeLayout:
    return KeyframeLayout(record["layout"], int(record["frames"]), tuple(int(p) for p in record["positions"]))


def decode(vae, samples: torch.Tensor, layout: KeyframeLayout | None) -> torch.Tensor:
    """[batch * frames, H, W, 3]: each causal piece decoded on its own (no layout: the whole latent at once)."""
    ranges = layout.latent_pieces() if layout is not None else ((0, samples.shape[2]),)
    pieces = []
    for a, b in ranges:
        images = vae.decode(samples[:, :, a:b])
        pieces.append(images if images.ndim == 5 else images[None])
    video = torch.cat(pieces, dim=1)
    return video.reshape(-1, *video.shape[-3:])
