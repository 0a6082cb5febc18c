"""FILM as `svd-inbetween eval`'s baseline row (the paper's Table 1 column FILM), run by the host's own node.

ComfyUI 0.33+ ships FILM (comfy_extras/nodes_frame_interpolation.py: FrameInterpolationModelLoader reads
models/frame_interpolation/, FrameInterpolate). The row's prompt loads both keyframes (already fitted to the
video size the way SVDInbetweenConditioning fits them), batches them and fills the frames between them with
FrameInterpolate passes whose multipliers multiply to frames - 1 (the node allows 2..16 per pass; 25 frames =
2 x 2 x 2 x 3: mid-frame passes, as FILM's authors run it, then a third). The weights file is the user's: never downloaded.
"""
from __future__ import annotations

FILM_MODE = "film"
FOLDER = "frame_interpolation"
MAX_MULTIPLIER = 16  # FrameInterpolate's "multiplier" maximum
START_TITLE, END_TITLE = "Start frame", "End frame"


def multipliers(frames: int) -> list[int]:
    """FrameInterpolate multipliers whose product is frames - 1: its prime factors, smallest first, so FILM runs as
    its authors use it, recursive mid-frame (x2) passes, wherever it can (25 frames: 2, 2, 2, 3). There is none when
    a prime factor of frames - 1 exceeds 16 (the node's largest multiplier)."""
    out, n, p = [], frames - 1, 2
    while n > 1 and p <= MAX_MULTIPLIER:
        while n % p == 0:
            out, n = [*out, p], n // p
        p += 1
    if frames < 3 or n > 1:
        raise ValueError(f"FILM makes 1 + a product of multipliers 2..{MAX_MULTIPLIER} frames from two keyframes; "
                         f"{frames} frames is not one (e.g. 5, 9, 13, 17, 25)")
    return out


def film_prompt(model_name: str, frames: int, fps: float, keyframe_ids: tuple[str, str] = ("1", "2")) -> dict:
    """API prompt: both keyframes in (LoadImage nodes `keyframe_ids`, the ids the SVD rows' workflow gives its
    keyframes, so one batch has one set of keyframe nodes), `frames` frames out as a SaveVideo."""
    start, end = keyframe_ids
    p = {
        start: {"class_type": "LoadImage", "inputs": {"image": "start.png"}, "_meta": {"title": START_TITLE}},
        end: {"class_type": "LoadImage", "inputs": {"image": "end.png"}, "_meta": {"title": END_TITLE}},
        "film_batch": {"class_type": "ImageBatch", "inputs": {"image1": [start, 0], "image2": [end, 0]}},
        "film_model": {"class_type": "FrameInterpolationModelLoader", "inputs": {"model_name": model_name}},
    }
    images = ["film_batch", 0]
    for i, m in enumerate(multipliers(frames)):
        nid = f"film_pass_{i}"
        p[nid] = {"class_type": "FrameInterpolate", "inputs": {"interp_model": ["film_model", 0], "images": images,
                                                              "multiplier": m}}
        images = [nid, 0]
    p["film_video"] = {"class_type": "CreateVideo", "inputs": {"images": images, "fps": float(fps)}}
    p["film_save"] = {"class_type": "SaveVideo", "inputs": {"video": ["film_video", 0],
                                                           "filename_prefix": "video/svd_inbetween_film",
                                                           "format": "auto", "codec": "auto"}}
    return p
