"""`svd-inbetween eval` end to end through a real ComfyUI server (the API client, as `run`) on tiny random
models, with tiny stand-in extractors passed explicitly. A plumbing test: the numbers it asserts are about
the bookkeeping, never the quality of a mode."""
from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

from api_cli import prompts_run, tiny_workflow

pytestmark = pytest.mark.server

PAIRS = ["clip.mp4@0-4", "frames@0-4"]
VARIANTS = ["gi", "mpd:cfg=1.5,seed=5"]  # a fused mode and an MPD one


def ground_truth(gt: str) -> None:
    import av
    from PIL import Image
    os.makedirs(os.path.join(gt, "frames"))
    rng = np.random.default_rng(2)
    scene = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    with av.open(os.path.join(gt, "clip.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 96, 80, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, 3 * i:3 * i + 96]), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    for i in range(5):
        Image.fromarray(np.roll(scene[:, :96], 4 * i, axis=0)).save(os.path.join(gt, "frames", f"{i:02d}.png"))


def stand_in_scorers():
    import torch

    from svd_inbetween.evaluation.harness import Scorers

    def pooled(frames):
        t = torch.from_numpy(np.asarray(frames)).double().movedim(-1, 1)
        return torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1).numpy()

    def clip_means(clips):
        return np.asarray(clips, dtype=np.float64).mean(axis=(2, 3)).reshape(len(clips), -1)

    def abs_diff(a, b):
        return (a - b).abs().flatten(1).mean(1)

    return Scorers(lpips=abs_diff, frame_features=pooled, clip_features=clip_means)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from comfy_job import prepare_base, video_info
    from PIL import Image
    from server_harness import ComfyServer
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.eval import evaluate

    base = str(tmp_path_factory.mktemp("eval"))
    weights = prepare_base(base)
    gt = os.path.join(base, "gt")
    ground_truth(gt)
    # one UNet call per clip: this test is about bookkeeping
    workflow = tiny_workflow(os.path.join(base, "tiny.json"), weights, steps=1, recurrence=0)
    out = os.path.join(base, "eval_out")
    with ComfyServer(base) as server:
        argv = ["eval", gt, "-o", out, "--workflow", workflow, "--server", server.url, "--no-progress",
                "--backward", weights, "--frames", "5", "--window", "5", "--width", "64", "--height", "64",
                "--seed", "11", "--mode", VARIANTS[0], "--mode", VARIANTS[1]]
        before = prompts_run([server])
        first = evaluate(build_parser().parse_args(argv), stand_in_scorers())
        history = server.get("/history")
        generated = prompts_run([server]) - before
        with open(os.path.join(out, "clips.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        second = evaluate(build_parser().parse_args(argv), stand_in_scorers())
        generated_again = prompts_run([server]) - before - generated
    seeds = sorted(n["inputs"]["seed"] for entry in history.values() for n in entry["prompt"][2].values()
                   if n["class_type"] == "SVDInbetweenSampler")
    videos = sorted(os.path.relpath(os.path.join(d, f), out)
                    for d, _, fs in os.walk(os.path.join(out, "videos")) for f in fs if f.endswith(".mp4"))
    return {"summary": first, "summary_again": second, "generated": generated, "generated_on_resume": generated_again,
            "sampler_seeds": seeds, "rows": rows, "files": sorted(os.listdir(out)),
            "sheets": sorted(os.listdir(os.path.join(out, "sheets"))),
            "videos": {v: video_info(os.path.join(out, v)) for v in videos},
            "frames_left": [f for _, _, fs in os.walk(os.path.join(out, "frames")) for f in fs],
            "plot_size": list(Image.open(os.path.join(out, "lpips_per_frame.png")).size)}


def test_eval_plumbing_generates_each_pair_and_variant_once(result):
    assert result["generated"] == len(PAIRS) * len(VARIANTS)
    assert result["sampler_seeds"] == sorted([11, 5] * len(PAIRS))  # --seed, then the variant's own seed
    rows = result["rows"]
    assert sorted((r["pair"], r["variant"]) for r in rows) == sorted((p, v) for p in PAIRS for v in VARIANTS)
    for r in rows:
        assert (r["frames"], r["width"], r["height"]) == ("5", "64", "64")
        assert r["seed"] == ("11" if r["variant"] == "gi" else "5")
        assert "cfg=1.5" in r["settings"] if r["mode"] == "mpd" else "cfg=2.0" in r["settings"]
        assert "steps=1" in r["settings"] and "recurrence=0" in r["settings"]
        assert 0 < float(r["psnr"]) < 60 and -1 <= float(r["ssim"]) <= 1  # random models: anything but a copy
        assert len(r["lpips_frames"].split()) == 5 and float(r["lpips"]) > 0


def test_eval_plumbing_writes_table_plot_sheets_and_videos(result):
    assert {"clips.csv", "summary.csv", "summary.md", "lpips_per_frame.png", "sheets", "features", "videos",
            "svd_inbetween_manifest.jsonl"} <= set(result["files"])
    assert result["sheets"] == ["clip.mp4_0-4.png", "frames_0-4.png"]
    assert result["plot_size"] == [720, 420]
    assert len(result["videos"]) == len(PAIRS) * len(VARIANTS)
    assert all(v == {"frames": 5, "width": 64, "height": 64} for v in result["videos"].values())
    assert result["frames_left"] == []  # the lossless frames of scored clips are removed
    summary = {s["variant"]: s for s in result["summary"]}
    assert list(summary) == VARIANTS
    for s in summary.values():
        assert s["pairs"] == 2 and s["frames"] == 10
        assert s["fid"] > 0 and s["fvd"] > 0 and math.isfinite(s["psnr"])


def test_eval_resume_skips_scored_pairs(result):
    assert result["generated_on_resume"] == 0
    assert result["summary_again"] == result["summary"]
