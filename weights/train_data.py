"""Training clips for backward-motion fine-tuning: a folder of videos or of frame folders.

Layout of the data folder (searched recursively):
    any video file (.mp4 .webm .mov .mkv .avi .gif), decoded with PyAV, and/or
    any folder holding image frames (.png .jpg .jpeg .webp .bmp), in natural name order.
A clip is `frames` frames taken every `stride` frames from a random start. Which clip
a sample gets depends only on (seed, sample id), so a run is the same on any number of
processes and resumes exactly.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..conditioning.keyframes import IMAGE_EXTS

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
RESIZE_MODES = ("crop", "stretch")


class TrainDataError(ValueError):
    """Unusable training data; the message names the folder or file and the fix."""


@dataclass(frozen=True)
class Source:
    path: str
    frame_count: int
    files: tuple[str, ...] = ()  # frame files for a frame folder; empty for a video file

    @property
    def is_video(self) -> bool:
        return not self.files


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def count_video_frames(path: str) -> int:
    """Frames in the first video stream (from the header, else by demuxing packets)."""
    import av
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as e:
        raise TrainDataError(f"{path}: PyAV cannot read this video ({e}); re-encode it or remove it") from None


def scan(root: str) -> list[Source]:
    """Every video file and every frame folder under `root`, sorted by path."""
    if not os.path.isdir(root):
        raise TrainDataError(f"--data {root}: not a folder; point it at a folder of videos or of frame folders")
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        frames = sorted((f for f in files if f.lower().endswith(IMAGE_EXTS)), key=_natural_key)
        if frames:
            sources.append(Source(folder, len(frames), tuple(os.path.join(folder, f) for f in frames)))
        for f in sorted(files):
            if f.lower().endswith(VIDEO_EXTS):
                path = os.path.join(folder, f)
                sources.append(Source(path, count_video_frames(path)))
    return sorted(sources, key=lambda s: s.path)


def span(frames: int, stride: int) -> int:
    """Source frames one clip covers."""
    return (frames - 1) * stride + 1


def fit(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """crop: scale to cover and centre-crop (keeps aspect); stretch: plain resize (the authors' choice)."""
    image = image.convert("RGB")
    if mode == "stretch":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    if mode != "crop":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    w, h = image.size
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - width) // 2, (nh - height) // 2
    return image.crop((left, top, left + width, top + height))


def _read_video(path: str, indices: list[int]) -> list[Image.Image]:
    import av
    wanted = set(indices)
    last = max(indices)
    got: dict[int, Image.Image] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_image()
            if i >= last:
                break
    missing = [i for i in indices if i not in got]
    if missing:
        raise TrainDataError(f"{path}: could only decode {len(got)} of the frames up to {last} "
                             "(the header over-counts frames); re-encode the video")
    return [got[i] for i in indices]


def sample_seed(seed: int, sample_id: int, purpose: int) -> int:
    """A 63-bit seed for one sample's randomness (purpose separates data, noise, ...)."""
    return int(np.random.SeedSequence([seed, sample_id, purpose]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ClipDataset(Dataset):
    """sample id -> a clip [frames, height, width, 3] float32 in [0, 1] (ComfyUI IMAGE layout)."""

    def __init__(self, root: str, frames: int, width: int, height: int, stride: int = 1, resize: str = "crop",
                 seed: int = 0):
        if frames < 2:
            raise TrainDataError(f"--frames {frames}: need at least 2 frames per clip")
        if stride < 1:
            raise TrainDataError(f"--stride {stride}: must be 1 or more")
        if resize not in RESIZE_MODES:
            raise TrainDataError(f"resize mode must be one of {RESIZE_MODES}, got {resize!r}")
        self.root, self.frames, self.width, self.height = root, frames, width, height
        self.stride, self.resize, self.seed = stride, resize, seed
        found = scan(root)
        need = span(frames, stride)
        self.sources = [s for s in found if s.frame_count >= need]
        skipped = len(found) - len(self.sources)
        if skipped:
            log.warning("svd-inbetween train: %d of %d videos in %s have fewer than %d frames (%d frames at "
                        "stride %d) and are skipped", skipped, len(found), root, need, frames, stride)
        if not self.sources:
            raise TrainDataError(
                f"--data {root}: no usable clips: found {len(found)} videos/frame folders, none with at least "
                f"{need} frames ({frames} frames at stride {stride}); add longer videos or lower --stride/--frames")

    def __len__(self) -> int:
        return len(self.sources)

    def clip(self, source_index: int, start: int) -> torch.Tensor:
        src = self.sources[source_index]
        indices = [start + k * self.stride for k in range(self.frames)]
        if indices[-1] >= src.frame_count:
            raise IndexError(f"{src.path}: clip {indices[0]}..{indices[-1]} past its {src.frame_count} frames")
        if src.is_video:
            images = _read_video(src.path, indices)
        else:
            images = []
            for i in indices:
                with Image.open(src.files[i]) as im:
                    images.append(im.copy())
        arrays = [np.asarray(fit(im, self.width, self.height, self.resize), dtype=np.float32) for im in images]
        return torch.from_numpy(np.stack(arrays) / np.float32(255.0))

    def pick(self, sample_id: int) -> tuple[int, int]:
        """(source index, start frame) of a sample: a uniformly chosen video, then a uniform start."""
        rng = np.random.default_rng(sample_seed(self.seed, sample_id, 0))
        source_index = int(rng.integers(len(self.sources)))
        last_start = self.sources[source_index].frame_count - span(self.frames, self.stride)
        return source_index, int(rng.integers(last_start + 1))

    def __getitem__(self, sample_id: int) -> dict:
        """{"id": sample_id, "pixels": clip}; the id also seeds the sample's noise in training."""
        return {"id": sample_id, "pixels": self.clip(*self.pick(sample_id))}


def rank_sample_ids(step: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The global sample ids of optimizer step `step` that process `rank` handles."""
    per_rank = batch_size // world_size
    first = step * batch_size + rank * per_rank
    return list(range(first, first + per_rank))


class StepSampler(Sampler):
    """Sample ids for steps [start_step, steps) of one process, in training order."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.steps = start_step, steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield from rank_sample_ids(step, self.batch_size, self.rank, self.world_size)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * (self.batch_size // self.world_size)
