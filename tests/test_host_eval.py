"""Host: `svd-inbetween eval` end to end in real ComfyUI on tiny random models, with tiny stand-in extractors passed
explicitly. A plumbing test: the numbers it asserts are about the bookkeeping, never the quality of a mode."""
from __future__ import annotations

import math

import pytest

from test_host_workflows import run_job

pytestmark = pytest.mark.host

PAIRS = ["clip.mp4@0-4", "frames@0-4"]
VARIANTS = ["gi", "gi_no_finetune:cfg=1.5,seed=5"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_job(tmp_path_factory.mktemp("eval"), "cli_eval")


def test_eval_plumbing_generates_each_pair_and_variant_once(result):
    assert result["generated"] == len(PAIRS) * len(VARIANTS)
    assert result["sampler_seeds"] == [11, 5] * len(PAIRS)  # --seed, then the variant's own seed
    rows = result["rows"]
    assert [(r["pair"], r["variant"]) for r in rows] == [(p, v) for p in PAIRS for v in VARIANTS]
    for r in rows:
        assert (r["frames"], r["width"], r["height"]) == ("5", "64", "64")
        assert r["seed"] == ("11" if r["variant"] == "gi" else "5")
        assert "cfg=1.5" in r["settings"] if r["mode"] == "gi_no_finetune" else "cfg=2.0" in r["settings"]
        assert 0 < float(r["psnr"]) < 60 and -1 <= float(r["ssim"]) <= 1  # random models: anything but a copy
        assert len(r["lpips_frames"].split()) == 5 and float(r["lpips"]) > 0


def test_eval_plumbing_writes_table_plot_sheets_and_videos(result):
    assert {"clips.csv", "summary.csv", "summary.md", "lpips_per_frame.png", "sheets", "features", "videos"} <= \
        set(result["files"])
    assert result["sheets"] == ["clip.mp4_0-4.png", "frames_0-4.png"]
    assert result["plot_size"] == [720, 420]
    assert len(result["videos"]) == len(PAIRS) * len(VARIANTS)
    assert all(v == {"frames": 5, "width": 64, "height": 64} for v in result["videos"].values())
    summary = {s["variant"]: s for s in result["summary"]}
    assert list(summary) == VARIANTS
    for s in summary.values():
        assert s["pairs"] == 2 and s["frames"] == 10
        assert s["fid"] > 0 and s["fvd"] > 0 and math.isfinite(s["psnr"])


def test_eval_resume_skips_scored_pairs(result):
    assert result["generated_on_resume"] == 0
    assert result["summary_again"] == result["summary"]
