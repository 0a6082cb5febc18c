"""The evaluation loop: for each keyframe pair and each variant (mode + settings), generate the in-between, score it
against the ground-truth clip, cache its features and append one CSV row; then the per-variant table.

Everything a row needs is on disk when the row is written, so a run that stops can be started again with the same
output folder and skips the (pair, variant) rows it already has.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import report
from .data import Pair, clip_indices, read_frames
from .frechet import frechet_from_features
from .metrics import psnr, ssim

log = logging.getLogger(__name__)
THUMB = 128
THUMB_FRAMES = 13


class EvalStateError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    label: str
    mode: str
    settings: tuple = ()  # ((key, value), ...) overriding the run's defaults

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label)


def parse_variant(text: str, allowed: dict[str, type], modes: tuple[str, ...]) -> Variant:
    """'MODE' or 'MODE:key=value,key=value' (keys: the run's settings, e.g. cfg, recurrence, seed)."""
    mode, _, rest = text.partition(":")
    if mode not in modes:
        raise ValueError(f"eval: --mode {text!r}: mode must be one of {', '.join(modes)}")
    settings = []
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in allowed:
            raise ValueError(f"eval: --mode {text!r}: '{item}' is not key=value with a key among {', '.join(sorted(allowed))}")
        try:
            settings.append((key, allowed[key](value.strip())))
        except ValueError:
            raise ValueError(f"eval: --mode {text!r}: {key} must be a {allowed[key].__name__}, got {value!r}") from None
    return Variant(text, mode, tuple(settings))


@dataclass
class Scorers:
    """Optional per-metric callables; a missing one leaves its column empty.
    lpips(a, b): [T, H, W, 3] in [0, 1] -> [T]; frame_features: uint8 [N, H, W, 3] -> [N, D];
    clip_features: uint8 [B, T, H, W, 3] -> [B, D]. `name` attributes identify cached features."""
    lpips: Callable | None = None
    frame_features: Callable | None = None
    clip_features: Callable | None = None

    def key(self) -> str:
        return "|".join(getattr(f, "name", type(f).__name__) if f else "-"
                        for f in (self.frame_features, self.clip_features))


# generate(pair, variant, keyframes uint8 [2, H, W, 3]) -> (frames [F, H', W', 3] float in [0, 1], {"seed", "settings"})
Generator = Callable[[Pair, Variant, np.ndarray], tuple[torch.Tensor, dict]]
# prepare([(pair, variant, keyframes), ...]): called once with every clip still to score, before the first
# `generate`, so that a client can generate them all at once (e.g. spread over several servers)
Prepare = Callable[[list[tuple[Pair, Variant, np.ndarray]]], None]
Fit = Callable[[np.ndarray, int, int], np.ndarray]


def same_size(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    if frames.shape[1:3] != (height, width):
        raise EvalStateError(f"eval: ground truth is {frames.shape[2]}x{frames.shape[1]} but the clip is {width}x{height}; "
                             "pass a fit function (the CLI resizes the ground truth the way the conditioning node does)")
    return frames


def thumbs(frames: np.ndarray) -> np.ndarray:
    from PIL import Image
    idx = np.round(np.linspace(0, len(frames) - 1, min(THUMB_FRAMES, len(frames)))).astype(int)
    h = max(1, round(THUMB * frames.shape[1] / frames.shape[2]))
    return np.stack([np.asarray(Image.fromarray(frames[i]).resize((THUMB, h), Image.BILINEAR)) for i in idx])


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@dataclass
class Layout:
    out: str

    def __post_init__(self):
        for sub in ("features", "sheets"):
            os.makedirs(os.path.join(self.out, sub), exist_ok=True)

    clips_csv = property(lambda self: os.path.join(self.out, "clips.csv"))
    summary_csv = property(lambda self: os.path.join(self.out, "summary.csv"))
    summary_md = property(lambda self: os.path.join(self.out, "summary.md"))
    plot = property(lambda self: os.path.join(self.out, "lpips_per_frame.png"))

    def features(self, group: str, pair: Pair) -> str:
        os.makedirs(os.path.join(self.out, "features", group), exist_ok=True)
        return os.path.join(self.out, "features", group, pair.slug + ".npz")

    def sheet(self, pair: Pair) -> str:
        return os.path.join(self.out, "sheets", pair.slug + ".png")


def _save(path: str, key: str, frames: np.ndarray, scorers: Scorers) -> None:
    data = {"key": np.array(key), "thumbs": thumbs(frames)}
    if scorers.frame_features:
        data["frame"] = np.asarray(scorers.frame_features(frames), dtype=np.float64)
    if scorers.clip_features:
        data["clip"] = np.asarray(scorers.clip_features(frames[None]), dtype=np.float64)
    np.savez(path + ".tmp.npz", **data)
    os.replace(path + ".tmp.npz", path)


def _load(path: str, key: str) -> dict:
    with np.load(path) as z:
        if str(z["key"]) != key:
            raise EvalStateError(f"eval: {path} holds features of '{z['key']}', this run uses '{key}'; "
                                 "use the same extractors or a new --output folder")
        return {k: z[k] for k in z.files}


@dataclass
class Evaluation:
    pairs: list[Pair]
    variants: list[Variant]
    generate: Generator
    scorers: Scorers
    out: str
    frames: int
    fit: Fit = same_size
    skipped: list[tuple[str, str]] = field(default_factory=list)
    prepare: Prepare | None = None

    def run(self) -> list[dict]:
        lay = Layout(self.out)
        done = {(r["pair"], r["variant"]) for r in report.read_rows(lay.clips_csv)}
        key = self.scorers.key()
        todos = {pair: [v for v in self.variants
                        if (pair.id, v.label) not in done or not os.path.isfile(lay.features(v.slug, pair))]
                 for pair in self.pairs}
        if self.prepare is not None:
            self.prepare([(pair, v, self.keyframes(pair)) for pair, todo in todos.items() for v in todo])
        for pair in self.pairs:
            todo = todos[pair]
            self.skipped += [(pair.id, v.label) for v in self.variants if v not in todo]
            if todo:
                self._score_pair(pair, todo, lay, key)
            self._sheet(pair, lay, key)
        return self.summarise(lay, key)

    def keyframes(self, pair: Pair) -> np.ndarray:
        """The pair's start and end frame, uint8 [2, H, W, 3] (what `generate` is given)."""
        idx = clip_indices(pair, self.frames)
        return read_frames(pair.source, [idx[0], idx[-1]])[[0, -1]]

    def _score_pair(self, pair: Pair, variants: list[Variant], lay: Layout, key: str) -> None:
        gt_raw = read_frames(pair.source, clip_indices(pair, self.frames))
        keys = gt_raw[[0, -1]]  # clip_indices starts at pair.start and ends at pair.end
        gt = None
        for v in variants:
            t0 = time.perf_counter()
            clip, meta = self.generate(pair, v, keys)
            seconds = time.perf_counter() - t0
            gen = to_uint8(clip)
            if gt is None:
                gt = np.ascontiguousarray(self.fit(gt_raw, gen.shape[2], gen.shape[1]))
                gt_path = lay.features("ground_truth", pair)
                if not os.path.isfile(gt_path):
                    _save(gt_path, key, gt, self.scorers)
            if gen.shape != gt.shape:
                raise EvalStateError(f"eval: {v.label} made {gen.shape[0]} frames of {gen.shape[2]}x{gen.shape[1]} for "
                                     f"{pair.id}, ground truth is {gt.shape}; set --frames to the generated count")
            a, b = torch.from_numpy(gen).double() / 255, torch.from_numpy(gt).double() / 255
            per_frame = self.scorers.lpips(a, b) if self.scorers.lpips else None
            _save(lay.features(v.slug, pair), key, gen, self.scorers)
            report.append_row(lay.clips_csv, {
                "pair": pair.id, "source": pair.name or pair.source, "start": pair.start, "end": pair.end,
                "variant": v.label, "mode": v.mode, "seed": meta.get("seed", ""), "settings": meta.get("settings", ""),
                "frames": gen.shape[0], "width": gen.shape[2], "height": gen.shape[1],
                "psnr": f"{float(psnr(a, b).mean()):.6f}", "ssim": f"{float(ssim(a, b).mean()):.6f}",
                "lpips": "" if per_frame is None else f"{float(per_frame.mean()):.6f}",
                "lpips_frames": "" if per_frame is None else " ".join(f"{float(x):.5f}" for x in per_frame),
                "gen_seconds": f"{seconds:.2f}"})
            log.info("eval: %s %s scored", pair.id, v.label)

    def _sheet(self, pair: Pair, lay: Layout, key: str) -> None:
        rows = {"ground truth": _load(lay.features("ground_truth", pair), key)["thumbs"]}
        for v in self.variants:
            rows[v.label] = _load(lay.features(v.slug, pair), key)["thumbs"]
        # the ground truth's first and last frames are the keyframes, fitted to the generated size
        report.contact_sheet(rows["ground truth"][[0, -1]], rows, lay.sheet(pair), thumb=THUMB)

    def summarise(self, lay: Layout, key: str) -> list[dict]:
        rows = report.read_rows(lay.clips_csv)
        ids = {p.id for p in self.pairs}
        gt = [_load(lay.features("ground_truth", p), key) for p in self.pairs]
        summary, curves = [], {}
        for v in self.variants:
            mine = [r for r in rows if r["variant"] == v.label and r["pair"] in ids]
            mine = list({r["pair"]: r for r in mine}.values())  # a resumed row written twice counts once
            gen = [_load(lay.features(v.slug, p), key) for p in self.pairs]
            entry = {"variant": v.label, "pairs": len(mine), "frames": sum(int(r["frames"]) for r in mine)}
            for m in ("psnr", "ssim", "lpips"):
                vals = [float(r[m]) for r in mine if r[m] != ""]
                entry[m] = float(np.mean(vals)) if vals else None
            entry["fid"] = (frechet_from_features(np.concatenate([g["frame"] for g in gt]),
                                                  np.concatenate([g["frame"] for g in gen]))
                            if self.scorers.frame_features else None)
            entry["fvd"] = (frechet_from_features(np.concatenate([g["clip"] for g in gt]),
                                                  np.concatenate([g["clip"] for g in gen]))
                            if self.scorers.clip_features and len(gen) >= 2 else None)
            summary.append(entry)
            lp = [np.array(r["lpips_frames"].split(), dtype=float) for r in mine if r["lpips_frames"]]
            if lp and len({len(x) for x in lp}) == 1:
                curves[v.label] = np.mean(lp, axis=0)
        n = len(self.pairs)
        notes = [f"{n} pairs x {self.frames} frames per variant. FID over all frames, FVD over clips "
                 f"({self.scorers.key()}); the paper used 117 (DAVIS) and 45 (Pexels) pairs. With few clips the "
                 "Fréchet distances carry a large small-sample bias: compare variants only on the same pairs."]
        if n < 2 and self.scorers.clip_features:
            notes.append("FVD needs at least 2 clips; left empty.")
        report.write_summary(summary, lay.summary_csv, lay.summary_md, notes)
        if curves:
            report.plot_curves(curves, lay.plot)
        return summary
