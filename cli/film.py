"""FILM as `svd-inbetween eval`'s baseline row (the paper's Table 1 column FILM), run by the host's own node.

ComfyUI 0.33+ ships FILM (comfy_extras/nodes_frame_interpolation.py: FrameInterpolationModelLoader reads
models/frame_interpolation/, FrameInterpolate). The row's prompt loads both keyframes (already fitted to the
video size the way SVDInbetweenConditioning fits them), batches them and fills the frames between them with
FrameInterpolate passes whose multipliers multiply to frames - 1 (the node allows 2..16 per pass; 25 frames =
12 x 2). The weights file is the user's: never downloaded.
"""
from __future__ import annotations

FILM_MODE = "film"
FOLDER = "frame_interpolation"
MAX_MULTIPLIER = 16  # FrameInterpolate's "multiplier" maximum
START_TITLE, END_TITLE = "Start frame", "End frame"


def multipliers(frames: int) -> list[int]:
    """FrameInterpolate multipliers (2..16 each, the largest that leaves a splittable rest first) whose product is
    frames - 1; one exists when no prime factor of frames - 1 exceeds 16."""
    def split(n: int) -> list[int] | None:
        if 2 <= n <= MAX_MULTIPLIER:
            return [n]
        for d in range(MAX_MULTIPLIER, 1, -1):
            rest = split(n // d) if n % d == 0 else None
            if rest:
                return [d, *rest]
        return None
    out = split(frames - 1) if frames >= 3 else None
    if out is None:
        raise ValueError(f"FILM makes 1 + a product of multipliers 2..{MAX_MULTIPLIER} frames from two keyframes; "
                         f"{frames} frames is not one (e.g. 5, 9, 13, 17, 25)")
    return out


def film_prompt(model_name: str, frames: int, fps: float) -> dict:
    """API prompt: both keyframes in, `frames` frames out (a SaveVideo of them, like the pack's workflows)."""
    p = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "start.png"}, "_meta": {"title": START_TITLE}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "end.png"}, "_meta": {"title": END_TITLE}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "FrameInterpolationModelLoader", "inputs": {"model_name": model_name}},
    }
    images = ["3", 0]
    for i, m in enumerate(multipliers(frames)):
        nid = str(10 + i)
        p[nid] = {"class_type": "FrameInterpolate", "inputs": {"interp_model": ["4", 0], "images": images,
                                                              "multiplier": m}}
        images = [nid, 0]
    p["5"] = {"class_type": "CreateVideo", "inputs": {"images": images, "fps": float(fps)}}
    p["6"] = {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "video/svd_inbetween_film",
                                                    "format": "auto", "codec": "auto"}}
    return p
