"""Where N keyframes sit in a Wan clip and its latent: plain integer arithmetic and one mask, no ComfyUI.

Wan's VAE is causal in time: a clip of 1 + 4k frames becomes 1 + k latent frames, the first frame encoded alone.
Two layouts place keyframes in that latent:

- "separate" (Anchor Frame Bridging's, on the Wan I2V models): every keyframe opens a latent frame of its own. The
  clip is cut at each keyframe into causal pieces: keyframe i and the frames up to keyframe i+1 (1 + 4k frames), and
  the last keyframe alone. So the gaps between keyframes are multiples of 4 frames, n keyframes need
  frames = n (mod 4), and the latent has n + (frames - n) / 4 frames. All 4 mask slots of a keyframe's latent frame
  are set.
- "inside" (ComfyUI's native first-last-frame layout, what the Wan FLF2V model was trained on): one causal piece of
  frames = 1 (mod 4) frames, 1 + (frames - 1) / 4 latent frames; keyframes anywhere. Pixel frame f is mask slot f + 3
  of the 4 slots per latent frame, and frame 0 sets all 4 slots of latent frame 0, as WanFirstLastFrameToVideo does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("separate", "inside")
TIME_STRIDE = 4  # pixel frames per latent frame after the first


class LayoutError(ValueError):
    """Keyframes that do not fit: `input_name` is the input to change (frames or the anchor positions)."""

    def __init__(self, where: str, input_name: str, message: str):
        super().__init__(where, input_name, message)
        self.where, self.input_name, self.message = where, input_name, message

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def latent_frames(layout: str, frames: int, keyframes: int) -> int:
    if layout == "separate":
        return keyframes + (frames - keyframes) // TIME_STRIDE
    return 1 + (frames - 1) // TIME_STRIDE


def fits(layout: str, frames: int, keyframes: int) -> bool:
    if frames < keyframes:
        return False
    want = keyframes if layout == "separate" else 1
    return (frames - want) % TIME_STRIDE == 0


def nearest_counts(layout: str, frames: int, keyframes: int) -> tuple[int, ...]:
    """The frame counts next to `frames` that fit (one below, one above; only above when below is too few)."""
    want = keyframes % TIME_STRIDE if layout == "separate" else 1
    below = frames - (frames - want) % TIME_STRIDE
    out = [below] if below >= max(keyframes, 2) and below != frames else []
    return tuple(out + [below + TIME_STRIDE])


def check_frames(layout: str, frames: int, keyframes: int, where: str) -> None:
    """A frame count that does not fit the keyframes: the error names the counts that do."""
    if layout not in LAYOUTS:
        raise LayoutError(where, "layout", f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if keyframes < 2:
        raise LayoutError(where, "frames", f"needs at least 2 keyframes (start and end), got {keyframes}")
    if fits(layout, frames, keyframes):
        return
    rule = (f"frames = {keyframes % TIME_STRIDE} (mod 4) for {keyframes} keyframes, each in a latent frame of its own"
            if layout == "separate" else "frames = 1 (mod 4): 1 + 4k frames")
    counts = " or ".join(str(c) for c in nearest_counts(layout, frames, keyframes))
    raise LayoutError(where, "frames", f"frames {frames} does not fit the {layout!r} layout, which needs {rule}; "
                      f"use {counts}")


def even_positions(layout: str, frames: int, keyframes: int) -> tuple[int, ...]:
    """Keyframes spread as evenly as the layout allows; the first at 0, the last at frames - 1."""
    if layout == "separate":
        gaps = (frames - keyframes) // TIME_STRIDE  # latent frames between keyframes, in all
        share = [gaps // (keyframes - 1) + (1 if i < gaps % (keyframes - 1) else 0) for i in range(keyframes - 1)]
        out = [0]
        for s in share:
            out.append(out[-1] + 1 + TIME_STRIDE * s)
        return tuple(out)
    return tuple(round(i * (frames - 1) / (keyframes - 1)) for i in range(keyframes))


def snap(layout: str, position: int, previous: int) -> int:
    """The position nearest `position` that the layout can hold after a keyframe at `previous` (ties go earlier)."""
    if layout != "separate":
        return position
    k = max(0, round((position - previous - 1) / TIME_STRIDE - 1e-9))
    return previous + 1 + TIME_STRIDE * k


@dataclass(frozen=True)
class KeyframeLayout:
    """Keyframes at pixel frames `positions` (the first 0, the last frames - 1) of a clip of `frames` frames."""
    layout: str
    frames: int
    positions: tuple[int, ...]

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.layout, self.frames, len(self.positions))

    def pieces(self) -> tuple[tuple[int, int], ...]:
        """The causal pieces the VAE encodes and decodes one at a time, as pixel ranges [a, b)."""
        if self.layout == "inside":
            return ((0, self.frames),)
        bounds = list(self.positions) + [self.frames]
        return tuple((a, b) for a, b in zip(bounds, bounds[1:]))

    def latent_pieces(self) -> tuple[tuple[int, int], ...]:
        """The latent-frame ranges [a, b) of `pieces()`: 1 + (frames - 1) / 4 latent frames each."""
        out, at = [], 0
        for a, b in self.pieces():
            n = 1 + (b - a - 1) // TIME_STRIDE
            out.append((at, at + n))
            at += n
        return tuple(out)

    def keyframe_slots(self) -> tuple[tuple[int, ...], ...]:
        """For each keyframe, the mask slots (4 per latent frame, latent-frame-major) it sets."""
        if self.layout == "separate":
            starts = [a for a, _ in self.latent_pieces()]
            return tuple(tuple(range(TIME_STRIDE * s, TIME_STRIDE * (s + 1))) for s in starts)
        return tuple(tuple(range(TIME_STRIDE)) if p == 0 else (p + TIME_STRIDE - 1,) for p in self.positions)

    def known(self, strengths: tuple[float, ...] | None = None) -> torch.Tensor:
        """[4, latent frames]: how much of each slot the keyframes give (strength; 0 = generate freely)."""
        strengths = strengths or (1.0,) * len(self.positions)
        m = torch.zeros(self.latent_frames * TIME_STRIDE)
        for slots, s in zip(self.keyframe_slots(), strengths):
            m[list(slots)] = s
        return m.view(self.latent_frames, TIME_STRIDE).transpose(0, 1)


def place(layout: str, frames: int, keyframes: int, anchors: tuple[int, ...] | None, where: str,
          input_name: str = "anchor_position") -> KeyframeLayout:
    """The layout for `keyframes` keyframes: the start at 0, the end at frames - 1, anchors where given (in the
    separate layout moved to the nearest frame it can hold) or spread evenly. Anchors outside the clip, out of order
    or on one frame are errors."""
    check_frames(layout, frames, keyframes, where)
    if not anchors:
        return KeyframeLayout(layout, frames, even_positions(layout, frames, keyframes))
    if len(anchors) != keyframes - 2:
        raise LayoutError(where, input_name, f"{len(anchors)} {input_name} value(s) for {keyframes - 2} anchor image(s)")
    last = frames - 1
    for p in anchors:
        if not 0 < p < last:
            raise LayoutError(where, input_name, f"{input_name} {p} is outside the clip; an anchor sits between the start "
                              f"(frame 0) and the end (frame {last})")
    for a, b in zip(anchors, anchors[1:]):
        if b <= a:
            raise LayoutError(where, input_name, f"{input_name} {b} collides with {a}: anchors take one frame each, in order")
    out = [0]
    for i, p in enumerate(anchors):
        after = len(anchors) - i  # keyframes still to come after this one, the end included
        q = min(snap(layout, p, out[-1]), last - after) if layout == "separate" else p
        if q <= out[-1]:
            raise LayoutError(where, input_name, f"{input_name} {p} leaves no room: in the separate layout a keyframe sits "
                              f"1 + 4k frames after the one before it, and {len(anchors)} anchor(s) must fit before "
                              f"frame {last}")
        out.append(q)
    return KeyframeLayout(layout, frames, tuple(out + [last]))
