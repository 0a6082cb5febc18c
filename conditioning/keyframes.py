"""Preparing the two keyframes as SVD conditioning (plain torch + ComfyUI's encoders)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

RESIZE_MODES = ("crop", "stretch", "pad")
# Image files a keyframe, frame or clip folder may hold.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Extra keys in our cond dicts; SVD's extra_conds ignores them.
# The frame count the conds were made for, so the sampler can check it.
FRAMES_KEY = "svd_inbetween_frames"
# The keyframe's latent WITHOUT the augmentation noise (VAE space, like concat_latent_image): what
# DDS pins the video's end frames to. The authors add the augmentation noise only to the
# conditioning and pin encode(keyframe); concat_latent_image is the noise-augmented keyframe.
CLEAN_LATENT_KEY = "svd_inbetween_keyframe_latent"


def fit_image(image: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """[B, H, W, C] in [0, 1] -> [B, height, width, 3], resampled with ComfyUI's common_upscale.

    crop: scale to cover, centre-crop (what ComfyUI's SVD_img2vid_Conditioning does);
    stretch: plain resize (the research code's behaviour; distorts other aspect ratios);
    pad: scale to fit, pad with mid grey.
    """
    import comfy.utils

    img = image[..., :3].movedim(-1, 1)
    if mode == "crop":
        return comfy.utils.common_upscale(img, width, height, "bilinear", "center").movedim(1, -1)
    if mode == "stretch":
        return comfy.utils.common_upscale(img, width, height, "bilinear", "disabled").movedim(1, -1)
    if mode == "pad":
        h, w = img.shape[-2:]
        scale = min(width / w, height / h)
        nw, nh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
        inner = comfy.utils.common_upscale(img, nw, nh, "bilinear", "disabled")
        out = torch.full((img.shape[0], 3, height, width), 0.5, dtype=img.dtype, device=img.device)
        top, left = (height - nh) // 2, (width - nw) // 2
        out[:, :, top:top + nh, left:left + nw] = inner
        return out.movedim(1, -1)
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def crop_keeps(image_width: int, image_height: int, width: int, height: int) -> tuple[float, float]:
    """The source pixels (width, height) that crop keeps of an image fitted to width x height: its centre at the
    video's aspect ratio (before rounding, which the host's centre crop then applies)."""
    aspect, target = image_width / image_height, width / height
    if aspect > target:
        return image_width * target / aspect, float(image_height)
    return float(image_width), image_height * aspect / target


# Keeps the augmentation noise off the initial-noise stream when noise_seed == seed.
AUGMENTATION_STREAM = 0x4A06_5EED


def augmentation_noise(shape, seed: int) -> torch.Tensor:
    """One noise tensor, shared by both keyframes as in the GI authors' pipeline."""
    g = torch.Generator(device="cpu").manual_seed((seed + AUGMENTATION_STREAM) % (2 ** 63))
    return torch.randn(shape, generator=g)


def augment(pixels: torch.Tensor, level: float, noise: torch.Tensor) -> torch.Tensor:
    """Noise augmentation in SVD's [-1, 1] pixel space: x + level * eps.

    Pixels here are [0, 1] (the VAE maps them to [-1, 1]), so the added noise is
    level / 2 * eps. ComfyUI's stock node adds level * eps in [0, 1] space, twice as
    strong relative to the image, for the same augmentation id.
    """
    if level <= 0:
        return pixels
    return pixels + noise.to(pixels) * (level / 2.0)


def svd_conds(clip_vision, vae, pixels: torch.Tensor, encode_pixels: torch.Tensor, motion_bucket_id: int, fps: int,
              augmentation_level: float, frames: int):
    """positive, negative cond lists for one keyframe, laid out like SVD_img2vid_Conditioning's,
    the positive one also holding the clean keyframe latent (CLEAN_LATENT_KEY) for DDS."""
    pooled = clip_vision.encode_image(pixels).image_embeds.unsqueeze(0)
    t = vae.encode(encode_pixels)
    clean = t if encode_pixels is pixels else vae.encode(pixels)
    extra = {"motion_bucket_id": motion_bucket_id, "fps": fps, "augmentation_level": augmentation_level,
             FRAMES_KEY: frames}
    positive = [[pooled, dict(extra, concat_latent_image=t, **{CLEAN_LATENT_KEY: clean})]]
    negative = [[torch.zeros_like(pooled), dict(extra, concat_latent_image=torch.zeros_like(t))]]
    return positive, negative


@dataclass(frozen=True)
class KeyframeEncoding:
    """How keyframes become SVD conditioning: video size, SVD's micro-conditioning, fitting."""
    width: int = 1024
    height: int = 576
    motion_bucket_id: int = 127
    fps: int = 7
    augmentation_level: float = 0.02
    resize: str = "crop"


def encode_keyframes(clip_vision, vae, images: list[torch.Tensor], encoding: KeyframeEncoding, seed: int,
                     frames: int):
    """Keyframes ([1, H, W, C] each) -> (the resized keyframes, their (positive, negative) conds).

    One augmentation noise (from `seed`) is shared by every keyframe, as in the GI authors' pipeline (the MPD
    scripts draw one per keyframe).
    """
    e = encoding
    keys = [fit_image(image, e.width, e.height, e.resize) for image in images]
    noise = augmentation_noise(keys[0].shape, seed)
    conds = [svd_conds(clip_vision, vae, k, augment(k, e.augmentation_level, noise), e.motion_bucket_id, e.fps,
                       e.augmentation_level, frames) for k in keys]
    return keys, conds


def empty_video_latent(frames: int, width: int, height: int) -> torch.Tensor:
    return torch.zeros([frames, 4, height // 8, width // 8])
