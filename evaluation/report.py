"""What an evaluation leaves on disk: per-clip CSV rows, the per-mode table (CSV + markdown), the LPIPS-along-the-
clip plot and a contact sheet per pair (all PIL, no plotting library needed)."""
from __future__ import annotations

import csv
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLIP_FIELDS = ("pair", "source", "start", "end", "variant", "mode", "seed", "settings", "frames", "width", "height",
               "psnr", "ssim", "lpips", "lpips_frames", "gen_seconds")
SUMMARY_FIELDS = ("variant", "pairs", "frames", "psnr", "ssim", "lpips", "fid", "fvd")
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: str, row: dict) -> None:
    new = not os.path.isfile(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CLIP_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CLIP_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def write_summary(rows: list[dict], csv_path: str, md_path: str, notes: list[str] = ()) -> None:
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SUMMARY_FIELDS})
    heads = ("variant", "pairs", "frames", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "FID ↓", "FVD ↓")
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in SUMMARY_FIELDS) + " |" for r in rows]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def plot_curves(curves: dict[str, np.ndarray], path: str, title: str = "LPIPS along the clip (mean over pairs)",
                size: tuple[int, int] = (720, 420)) -> None:
    """One line per variant: y = curve[i] at frame i."""
    w, h = size
    left, right, top, bottom = 70, 20, 44 + 16 * len(curves), 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = _font(14)
    vals = np.concatenate([c[np.isfinite(c)] for c in curves.values()]) if curves else np.zeros(1)
    lo, hi = 0.0, 1.1 * float(vals.max()) if vals.size and vals.max() > 0 else 1.0
    n = max(len(c) for c in curves.values()) if curves else 2
    pw, ph = w - left - right, h - top - bottom

    def xy(i, v):
        return left + pw * i / max(n - 1, 1), top + ph * (1 - (v - lo) / (hi - lo))

    d.rectangle([left, top, left + pw, top + ph], outline="black")
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = xy(0, v)[1]
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 7), f"{v:.3f}", fill="black", font=font)
    for i in range(n):
        if n <= 30 or i % math.ceil(n / 15) == 0:
            x = xy(i, lo)[0]
            d.line([x, top + ph, x, top + ph + 4], fill="black")
            d.text((x - 4, top + ph + 6), str(i), fill="black", font=font)
    d.text((left + pw / 2 - 20, h - 24), "frame", fill="black", font=font)
    d.text((left, 10), title, fill="black", font=font)
    for j, (label, c) in enumerate(curves.items()):
        colour = COLOURS[j % len(COLOURS)]
        pts = [xy(i, float(v)) for i, v in enumerate(c) if np.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        ly = 32 + 16 * j  # legend in the top margin, clear of the curves
        d.line([left, ly + 7, left + 20, ly + 7], fill=colour, width=3)
        d.text((left + 26, ly), label, fill=colour, font=font)
    img.save(path)


def contact_sheet(keyframes: np.ndarray, rows: dict[str, np.ndarray], path: str, thumb: int = 128,
                  max_frames: int = 13) -> None:
    """Row 'keyframes' (start, end), then one row per clip (ground truth, each variant): evenly spaced frames."""
    font = _font(13)
    label_w = 150
    cells = max(min(max_frames, len(c)) for c in rows.values())
    fh, fw = keyframes.shape[1:3]
    tw, th = thumb, max(1, round(thumb * fh / fw))
    all_rows = [("keyframes", keyframes)] + list(rows.items())
    sheet = Image.new("RGB", (label_w + cells * (tw + 2), len(all_rows) * (th + 4)), "white")
    d = ImageDraw.Draw(sheet)
    for r, (label, clip) in enumerate(all_rows):
        y = r * (th + 4) + 2
        d.text((4, y + th // 2 - 7), label[:22], fill="black", font=font)
        idx = np.round(np.linspace(0, len(clip) - 1, min(cells, len(clip)))).astype(int)
        # keyframes sit above the first and last generated frame
        cols = [0, cells - 1] if r == 0 else range(len(idx))
        for c, i in zip(cols, idx):
            im = Image.fromarray(np.asarray(clip[i], dtype=np.uint8)).resize((tw, th), Image.BILINEAR)
            sheet.paste(im, (label_w + c * (tw + 2), y))
    sheet.save(path)
