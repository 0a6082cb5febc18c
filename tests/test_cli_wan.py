"""`svd-inbetween run` / `eval` on the shipped Wan workflows: the generation flags reach the Wan nodes (the frame
count of Anchor Frame Bridging's passes kept one apart), --wan-model the UNETLoader, and eval's Wan rows are
resampled in time to the ground truth's frames."""
from __future__ import annotations

import argparse

import pytest

from svd_inbetween.cli import build_parser


def run_args(*argv):
    return build_parser().parse_args(["run", "--start", "a.png", "--end", "b.png", "-o", "out.mp4", *argv])


def of(prompt: dict, class_type: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]


def test_afb_flags_reach_every_pass():
    from svd_inbetween.cli.run import build_prompt
    prompt, nodes, dirs = build_prompt(run_args("--workflow", "wan_afb", "--frames", "87", "--width", "640",
                                                "--height", "368", "--steps", "4", "--seed", "7", "--cfg", "3.5",
                                                "--wan-model", "my_i2v.safetensors"))
    keyframes = of(prompt, "SVDInbetweenWanKeyframes")
    assert sorted(k["frames"] for k in keyframes) == [86, 86, 87]  # start + end passes one frame shorter
    assert all(k["frames"] == 87 for k in keyframes if isinstance(k.get("anchor_image"), list))
    assert {(k["width"], k["height"]) for k in keyframes} == {(640, 368)}
    samplers = of(prompt, "KSampler")
    assert len(samplers) == 2 and all((s["steps"], s["seed"], s["cfg"]) == (4, 7, 3.5) for s in samplers)
    assert [s["steps"] for s in of(prompt, "BasicScheduler")] == [4]
    assert [s["noise_seed"] for s in of(prompt, "RandomNoise")] == [7]
    assert [s["cfg"] for s in of(prompt, "CFGGuider")] == [3.5]
    assert [s["unet_name"] for s in of(prompt, "UNETLoader")] == ["my_i2v.safetensors"]
    assert all(prompt[n]["class_type"] == "LoadImage" for n in nodes)


def test_afb_defaults_are_the_authors():
    from svd_inbetween.cli.run import build_prompt
    prompt, _, _ = build_prompt(run_args("--workflow", "wan_afb"))
    assert sorted(k["frames"] for k in of(prompt, "SVDInbetweenWanKeyframes")) == [82, 82, 83]
    assert all((s["steps"], s["cfg"], s["sampler_name"], s["scheduler"]) == (50, 5.0, "euler", "simple")
               for s in of(prompt, "KSampler"))
    assert [s["shift"] for s in of(prompt, "ModelSamplingSD3")] == [5.0]


def test_native_flf_frames_is_its_length():
    from svd_inbetween.cli.run import build_prompt
    prompt, _, _ = build_prompt(run_args("--workflow", "wan_flf", "--frames", "49", "--width", "512"))
    (flf,) = of(prompt, "WanFirstLastFrameToVideo")
    assert (flf["length"], flf["width"]) == (49, 512)


def test_svd_flags_on_a_wan_workflow_are_errors():
    from svd_inbetween.cli.run import build_prompt
    from svd_inbetween.cli.workflow import WorkflowError
    with pytest.raises(WorkflowError, match="--mode: the workflow has no input it applies to"):
        build_prompt(run_args("--workflow", "wan_afb", "--mode", "vibid"))
    with pytest.raises(WorkflowError, match="--checkpoint: the workflow has no ImageOnlyCheckpointLoader"):
        build_prompt(run_args("--workflow", "wan_afb", "--checkpoint", "svd_xt.safetensors"))
    with pytest.raises(WorkflowError, match="--wan-model: the workflow has no UNETLoader"):
        build_prompt(run_args("--wan-model", "x.safetensors"))


def test_eval_wan_rows_run_their_workflows_and_resample_in_time():
    from svd_inbetween.cli.eval import in_time, variants
    args = build_parser().parse_args(["eval", "gt", "-o", "out", "--frames", "25", "--mode", "wan_afb:steps=4",
                                      "--mode", "wan_flf", "--mode", "vibid"])
    assert [v.mode for v in variants(args)] == ["wan_afb", "wan_flf", "vibid"]
    idx = in_time(83, 25)
    assert idx[0] == 0 and idx[-1] == 82 and len(idx) == 25 and idx == sorted(set(idx))
    assert in_time(25, 25) == list(range(25)) and in_time(81, 21) == list(range(0, 81, 4))


def test_eval_wan_row_prompt_keeps_the_workflows_frames():
    """--frames cuts the ground truth; the Wan row's clip keeps its workflow's frame counts (83 / 82)."""
    from svd_inbetween.cli.eval import WAN_VARIANTS
    from svd_inbetween.cli.run import build_prompt
    args = build_parser().parse_args(["eval", "gt", "-o", "out", "--frames", "25", "--mode", "wan_afb"])
    run = argparse.Namespace(**vars(args))
    run.mode, run.workflow, run.frames = None, "wan_afb", None
    prompt, _, _ = build_prompt(run)
    assert "wan_afb" in WAN_VARIANTS
    assert sorted(k["frames"] for k in of(prompt, "SVDInbetweenWanKeyframes")) == [82, 82, 83]
