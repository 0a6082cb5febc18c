"""Ground truth: videos (anything PyAV decodes: mp4, webm, ...) or folders of frames, and keyframe pairs in them.

A pair is the first and last frame of a window of the ground truth; the clip the model must reproduce is that
window, resampled to the generated frame count when the window is longer (paper: pairs >= 25 frames apart).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from ..conditioning.keyframes import IMAGE_EXTS

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")


class EvalDataError(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    source: str  # video file or frame folder
    start: int
    end: int  # inclusive
    name: str = ""  # source relative to the ground-truth folder, for ids and file names

    @property
    def id(self) -> str:
        return f"{self.name or os.path.basename(self.source)}@{self.start}-{self.end}"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.id)


def list_sources(folder: str) -> list[str]:
    """Videos and frame folders directly inside `folder`, sorted by name."""
    if not os.path.isdir(folder):
        raise EvalDataError(f"eval: ground-truth folder not found: {folder}")
    out = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if os.path.isfile(path) and entry.lower().endswith(VIDEO_EXTS):
            out.append(path)
        elif os.path.isdir(path) and _frame_files(path):
            out.append(path)
    if not out:
        raise EvalDataError(f"eval: {folder} holds no videos ({', '.join(VIDEO_EXTS)}) and no folders of frames")
    return out


def _frame_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))


def count_frames(source: str) -> int:
    if os.path.isdir(source):
        return len(_frame_files(source))
    import av
    with av.open(source) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_frames(source: str, indices: list[int]) -> np.ndarray:
    """The frames at `indices` (0-based) as uint8 [len(indices), H, W, 3]."""
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    if os.path.isdir(source):
        files = _frame_files(source)
        from PIL import Image
        for i in wanted:
            if i >= len(files):
                break
            with Image.open(files[i]) as im:
                got[i] = np.asarray(im.convert("RGB"))
    else:
        import av
        with av.open(source) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= wanted[-1]:
                    break
    missing = [i for i in wanted if i not in got]
    if missing:
        raise EvalDataError(f"eval: {source} has no frame {missing[0]} (it has {count_frames(source)} frames)")
    shapes = {got[i].shape for i in wanted}
    if len(shapes) > 1:
        raise EvalDataError(f"eval: frames of {source} differ in size: {sorted(shapes)}")
    return np.stack([got[i] for i in indices])


def even_indices(first: int, last: int, frames: int) -> list[int]:
    """`frames` indices from `first` to `last`, both kept, evenly in time."""
    return [int(i) for i in np.round(np.linspace(first, last, frames))]


def clip_indices(pair: Pair, frames: int) -> list[int]:
    """Ground-truth frame indices matching the `frames` generated frames (first and last are the keyframes)."""
    return even_indices(pair.start, pair.end, frames)


def select_pairs(folder: str, window: int, stride: int | None = None, max_pairs: int | None = None,
                 per_source: int | None = None) -> list[Pair]:
    """First/last frames of windows of `window` frames every `stride` frames, taken round-robin over the sources
    (so a `max_pairs` cap spreads over the videos instead of exhausting the first one)."""
    if window < 2:
        raise EvalDataError(f"eval: --window must be at least 2 frames, got {window}")
    stride = stride or window
    if stride < 1:
        raise EvalDataError(f"eval: --stride must be at least 1, got {stride}")
    per: list[list[Pair]] = []
    for source in list_sources(folder):
        n = count_frames(source)
        name = os.path.relpath(source, folder)
        pairs = [Pair(source, s, s + window - 1, name) for s in range(0, n - window + 1, stride)]
        per.append(pairs[:per_source] if per_source else pairs)
    out = [p for rank in range(max((len(p) for p in per), default=0)) for p in (ps[rank] for ps in per if rank < len(ps))]
    if not out:
        raise EvalDataError(f"eval: no video in {folder} has {window} frames (--window); use a shorter window")
    return out[:max_pairs] if max_pairs else out


def read_pair_list(path: str, folder: str | None = None) -> list[Pair]:
    """CSV lines 'source,start,end' (frame indices, 0-based, end inclusive); sources relative to `folder`."""
    pairs = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            try:
                source, start, end = row[0], int(row[1]), int(row[2])
            except (IndexError, ValueError):
                raise EvalDataError(f"eval: {path} line {line}: expected 'source,start,end' with frame numbers") from None
            full = source if os.path.isabs(source) or not folder else os.path.join(folder, source)
            if not os.path.exists(full):
                raise EvalDataError(f"eval: {path} line {line}: ground truth not found: {full}")
            if end - start < 1 or start < 0:
                raise EvalDataError(f"eval: {path} line {line}: need 0 <= start < end, got {start},{end}")
            pairs.append(Pair(full, start, end, source))
    if not pairs:
        raise EvalDataError(f"eval: {path} lists no pairs")
    return pairs
