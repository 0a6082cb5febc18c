"""Anchor Frame Bridging's keyframe conditioning in the authors' own formulation, written from reading
`diffsynth/pipelines/wan_video.py` (`encode_image`, `__call__`) of roboticwink1/Anchor-Frame-Bridging-... at 733cc15:
a per-pixel-frame mask whose keyframe entries are repeated 4 times, the VAE input as keyframes between zero blocks in
[-1, 1], and the latent-frame count of the noise. Tests compare the pack's layout with it; nothing in the pack
imports it.
"""
from __future__ import annotations

import torch


def rounded_frames(frames: int, keyframes: int) -> int:
    """Their frame-count rule: a count that does not fit is moved to ((N + 2) // 4) * 4 + r."""
    r = {1: 1, 2: 2, 3: 3, 4: 1}[keyframes]
    return frames if frames % 4 == r else ((frames + 2) // 4) * 4 + r


def noise_frames(frames: int, keyframes: int) -> int:
    """Latent frames of their noise: (N - k) // 4 + k for 1 to 3 keyframes, Wan's usual 1 + (N - 1) // 4 for 4."""
    return (frames - 1) // 4 + 1 if keyframes == 4 else (frames - keyframes) // 4 + keyframes


def mask(frames: int, keyframes: int, m, h: int = 1, w: int = 1) -> torch.Tensor:
    """Their mask [4, T, h, w] (1 = keyframe). m: the middle keyframe's `middle_frame_position` (3 keyframes) or
    the pair (m1, m2) (4 keyframes)."""
    msk = torch.ones(1, frames, h, w)
    rep = lambda s: torch.repeat_interleave(s, repeats=4, dim=1)  # noqa: E731
    if keyframes == 2:
        msk[:, 1:-1] = 0
        msk = torch.cat([rep(msk[:, :1]), msk[:, 1:-1], rep(msk[:, -1:])], dim=1)
    elif keyframes == 3:
        msk[:, 1:1 + 4 * m] = 0
        msk[:, 2 + 4 * m:-1] = 0
        msk = torch.cat([rep(msk[:, :1]), msk[:, 1:1 + 4 * m], rep(msk[:, 1 + 4 * m:2 + 4 * m]),
                         msk[:, 2 + 4 * m:-1], rep(msk[:, -1:])], dim=1)
    elif keyframes == 4:
        m1, m2 = m
        msk[:, 1:1 + 4 * m1] = 0
        msk[:, 2 + 4 * m1:2 + 4 * m1 + 4 * m2] = 0
        msk[:, 3 + 4 * m1 + 4 * m2:-1] = 0
        msk = torch.cat([rep(msk[:, :1]), msk[:, 1:]], dim=1)
    else:
        raise ValueError(keyframes)
    return msk.view(1, msk.shape[1] // 4, 4, h, w).transpose(1, 2)[0]


def vae_input(images: list[torch.Tensor], frames: int, m) -> torch.Tensor:
    """Their VAE input [3, N, H, W] in [-1, 1]: keyframes (each [3, H, W] in [-1, 1]) between zero blocks."""
    z = lambda n: torch.zeros(3, n, *images[0].shape[-2:])  # noqa: E731
    one = [i[:, None] for i in images]
    if len(images) == 2:
        parts = [one[0], z(frames - 2), one[1]]
    elif len(images) == 3:
        parts = [one[0], z(4 * m), one[1], z(frames - 3 - 4 * m), one[2]]
    else:
        m1, m2 = m
        parts = [one[0], z(4 * m1), one[1], z(4 * m2), one[2], z(frames - 4 - 4 * (m1 + m2)), one[3]]
    return torch.cat(parts, dim=1)


def keyframe_positions(frames: int, keyframes: int, m) -> tuple[int, ...]:
    """Where their VAE input puts each keyframe."""
    if keyframes == 2:
        return 0, frames - 1
    if keyframes == 3:
        return 0, 1 + 4 * m, frames - 1
    m1, m2 = m
    return 0, 1 + 4 * m1, 2 + 4 * m1 + 4 * m2, frames - 1
