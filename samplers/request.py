"""A request's shape, checked once before any tensor is made: one frame cap and one size rule for every node,
crops that cannot come out empty, and what the request needs against what this machine has.

Every check raises InbetweenInputError naming the input (validation.py); the node labels it. A shared server
can rely on these to turn any value its clients send into the pack's input error instead of an allocator's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..conditioning.keyframes import RESIZE_MODES, KeyframeEncoding, crop_keeps
from .validation import MIN_FRAMES, check_choice, fail

if TYPE_CHECKING:
    import torch

# Frames of one video (a chain's whole video included): SVD Inbetween Conditioning's video_frames maximum.
MAX_FRAMES = 4096
MIN_SIZE = 64
MAX_SIZE = 16384  # ComfyUI's MAX_RESOLUTION, the largest width / height its own nodes take
# What crop must keep of a keyframe in each direction (source pixels); less rounds to an empty crop in the host's
# centre crop (comfy.utils.common_upscale).
MIN_CROP_PIXELS = 2
LATENT_CHANNELS, LATENT_SCALE = 4, 8
FLOAT_BYTES = 4  # latents and IMAGE tensors are float32 on the intermediate device
GIB = 2**30


def check_size(width: int, height: int) -> None:
    """The one size rule (the nodes' width / height inputs declare the same): multiples of 8 (the latent is 1/8)
    within [MIN_SIZE, MAX_SIZE]."""
    if width % LATENT_SCALE or height % LATENT_SCALE:
        fail("width", f"width and height must be multiples of 8, got {width}x{height}")
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIZE <= value <= MAX_SIZE:
            fail(name, f"must be in [{MIN_SIZE}, {MAX_SIZE}], got {value}")


def check_frames(name: str, frames: int) -> None:
    """The one frame cap: a video of [MIN_FRAMES, MAX_FRAMES] frames, keyframes included."""
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        fail(name, f"makes a video of {frames} frames; a video has {MIN_FRAMES} to {MAX_FRAMES} frames, keyframes "
             "included")


def check_resize(resize: str) -> None:
    check_choice("resize", resize, RESIZE_MODES)  # ComfyUI 0.3.64 does not check a V3 combo's value


def check_crop(name: str, image: torch.Tensor, width: int, height: int, resize: str) -> None:
    """resize crop keeps the centre of the keyframe at the video's aspect ratio: it must keep some pixels."""
    if resize != "crop":
        return
    h, w = int(image.shape[-3]), int(image.shape[-2])
    kept_w, kept_h = crop_keeps(w, h, width, height)
    if min(kept_w, kept_h) < MIN_CROP_PIXELS:
        fail(name, f"is {w}x{h}; cropped to the video's aspect ratio ({width}x{height}) it keeps {kept_w:.2f}x"
             f"{kept_h:.2f} pixels, nothing to fit: set resize to pad or stretch, or a width and height nearer the "
             "keyframe's shape")


def latent_bytes(frames: int, width: int, height: int) -> int:
    return frames * LATENT_CHANNELS * (height // LATENT_SCALE) * (width // LATENT_SCALE) * FLOAT_BYTES


def check_video_fits(frames_input: str, frames: int, width: int, height: int, keyframes: int) -> None:
    """The video latent and the fitted keyframes (float32 on the intermediate device) must fit that device; the
    keyframes twice: fitted one by one, then batched (the chain's keyframe sockets)."""
    import comfy.model_management as mm
    device = mm.intermediate_device()
    need = latent_bytes(frames, width, height) + 2 * keyframes * height * width * 3 * FLOAT_BYTES
    total = mm.get_total_memory(device)
    if need > total:
        fail(frames_input, f"a {width}x{height} video of {frames} frames needs {need / GIB:.1f} GiB for its latent "
             f"and keyframes alone, more than this machine's {device} has in all ({total / GIB:.1f} GiB): lower "
             f"width, height or {frames_input}")


def check_encode_fits(vae, width: int, height: int) -> None:
    """ComfyUI's own estimate of one keyframe's VAE encode must fit the VAE's device where the host cannot tile
    its way out (it retries a GPU encode tiled after an out-of-memory error; a CPU encode just fails)."""
    import comfy.model_management as mm
    device = getattr(vae, "device", None)
    estimate = getattr(vae, "memory_used_encode", None)
    if device is None or getattr(device, "type", None) != "cpu" or not callable(estimate):
        return
    need = estimate((1, 3, height, width), vae.vae_dtype)
    total = mm.get_total_memory(device)
    if need > total:
        fail("width", f"encoding one {width}x{height} keyframe needs about {need / GIB:.1f} GiB (ComfyUI's estimate), "
             f"more than this machine's {device} has in all ({total / GIB:.1f} GiB): lower width and height")


def check_video(encoding: KeyframeEncoding, frames_input: str, frames: int, keyframes: list[tuple[str, torch.Tensor]],
                vae=None) -> None:
    """A video request, whole: the size rule, the resize, the frame cap, each keyframe's crop (named by its input),
    the latent and keyframes against memory and, given the VAE, one keyframe's encode."""
    width, height = encoding.width, encoding.height
    check_size(width, height)
    check_resize(encoding.resize)
    check_frames(frames_input, frames)
    for name, image in keyframes:
        check_crop(name, image, width, height, encoding.resize)
    check_video_fits(frames_input, frames, width, height, keyframes=len(keyframes))
    if vae is not None:
        check_encode_fits(vae, width, height)


def check_call_fits(needed: float, x: torch.Tensor, device) -> None:
    """The smallest model call of any execution (needed bytes, execution.needed_bytes) must fit the device in all."""
    import comfy.model_management as mm
    total = mm.get_total_memory(device)
    if needed > total:
        frames, h, w = x.shape[0], x.shape[-2] * LATENT_SCALE, x.shape[-1] * LATENT_SCALE
        fail("latent_image", f"a {w}x{h} video of {frames} frames needs about {needed / GIB:.1f} GiB for one model "
             f"call even with execution lowvram, more than this machine's {device} has in all ({total / GIB:.1f} "
             "GiB): lower width, height or frames")
