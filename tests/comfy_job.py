"""Runs in a subprocess: a ComfySession over a temp base directory with tiny models.

Usage: python comfy_job.py JOB.json  -> prints one JSON line (prefixed RESULT:) with what
the job produced. Jobs:
  workflows: run every shipped API workflow with the tiny models swapped in.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from host import import_pack, setup_comfy  # noqa: E402

TINY = dict(width=64, height=64, frames=5, steps=2, recurrence=1)


def tiny_prompt(api: dict, weights_name: str) -> dict:
    """A shipped API workflow with tiny models, tiny sizes and few steps."""
    p = json.loads(json.dumps(api))
    for node in p.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ImageOnlyCheckpointLoader":
            node["class_type"] = "SVDInbetweenTestTinyModels"
            node["inputs"] = {"ckpt_name": "tiny"}
        elif ct == "SVDInbetweenConditioning":
            inputs.update(width=TINY["width"], height=TINY["height"], video_frames=TINY["frames"])
        elif ct == "SVDInbetweenLoadBackwardWeights":
            inputs["weights"] = weights_name
        elif ct == "SVDInbetweenChain":
            # 3-frame segments: the shipped chain (A, B, A) then has TINY["frames"] frames
            inputs.update(width=TINY["width"], height=TINY["height"], frames="3")
        if ct in ("SVDInbetweenSampler", "BasicScheduler", "SVDInbetweenChain"):
            inputs["steps"] = TINY["steps"]
        if ct in ("SVDInbetweenSampler", "SVDInbetweenRecurrentEuler", "SVDInbetweenChain"):
            inputs["recurrence"] = TINY["recurrence"]
    return p


def prepare_base(base: str) -> str:
    """Input images and a tiny backward-weights file in a ComfyUI base directory."""
    import numpy as np
    from PIL import Image
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("start.png", "end.png"):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(os.path.join(base, "input", name))
    import tiny_models
    from svd_inbetween.bench.models import random_backward_weights
    from svd_inbetween.weights.format import save_backward_weights
    folder = os.path.join(base, "models", "svd_inbetween")
    os.makedirs(folder, exist_ok=True)
    name = "tiny_backward.safetensors"
    save_backward_weights(os.path.join(folder, name), random_backward_weights(tiny_models.tiny_svd_model()),
                          "absolute", {"source": "test"})
    return name


def video_info(path: str) -> dict:
    import av
    with av.open(path) as c:
        frames = [f for f in c.decode(video=0)]
        return {"frames": len(frames), "width": frames[0].width, "height": frames[0].height}


def job_workflows(job: dict) -> dict:
    from svd_inbetween.cli.comfy_session import ComfySession
    base = job["base"]
    weights = prepare_base(base)
    session = ComfySession(base_directory=base, cpu=True, extra_custom_nodes=(os.path.join(HERE, "tiny_pack"),))
    results = {}
    api_dir = os.path.join(REPO, "workflows", "api")
    for fname in sorted(os.listdir(api_dir)):
        with open(os.path.join(api_dir, fname)) as f:
            prompt = tiny_prompt(json.load(f), weights)
        res = session.run(prompt)
        videos = []
        for out in res.outputs.values():
            for item in out.get("images", []):
                path = os.path.join(base, "output", item.get("subfolder", ""), item["filename"])
                videos.append(video_info(path))
        # node 6 makes the video latent; find its LATENT among its outputs (the chain's is the second)
        latent = next(o[0] for o in session.node_output("6") if isinstance(o[0], dict))["samples"]
        results[fname] = {"videos": videos, "latent_shape": list(latent.shape),
                          "latent_sum": float(latent.double().sum())}
    return results


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    setup_comfy()
    import_pack()
    result = {"workflows": job_workflows, "cli_run": job_cli_run, "cli_eval": job_cli_eval}[job["kind"]](job)
    print("RESULT:" + json.dumps(result))



def job_cli_run(job: dict) -> dict:
    """`svd-inbetween run` plumbing (single and batch) with the tiny models swapped in for the checkpoint."""
    import argparse

    import numpy as np
    from PIL import Image
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.comfy_session import ComfySession
    from svd_inbetween.cli.run import collect_pairs, run_pairs

    base = job["base"]
    weights = prepare_base(base)
    frames_dir = os.path.join(base, "keys")
    os.makedirs(frames_dir)
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(os.path.join(frames_dir, name))
    ckpt = os.path.join(base, "fake_ckpt.safetensors")
    open(ckpt, "wb").close()
    session = ComfySession(base_directory=base, cpu=True, extra_custom_nodes=(os.path.join(HERE, "tiny_pack"),))

    def transform(prompt):
        return tiny_prompt(prompt, weights)

    common = ["--checkpoint", ckpt, "--backward", os.path.join(base, "models", "svd_inbetween", weights),
              "--steps", "2", "--frames", "5", "--width", "64", "--height", "64", "--cpu"]
    out = {}
    single: argparse.Namespace = build_parser().parse_args(
        ["run", "--start", os.path.join(frames_dir, "a.png"), "--end", os.path.join(frames_dir, "c.png"),
         "-o", os.path.join(base, "single.mp4"), *common])
    out["single"] = [video_info(p) for p in run_pairs(session, single, collect_pairs(single), base, transform)]
    batch = build_parser().parse_args(["run", "--folder", frames_dir, "-o", os.path.join(base, "batch"), *common])
    written = run_pairs(session, batch, collect_pairs(batch), base, transform)
    out["batch"] = sorted(os.path.basename(p) for p in written)
    return out


def job_cli_eval(job: dict) -> dict:
    """`svd-inbetween eval` plumbing on tiny random models with tiny stand-in extractors (not quality numbers):
    ground truth from an mp4 and a frame folder, two variants, then a resumed run that must generate nothing."""
    import csv

    import av
    import numpy as np
    from PIL import Image
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.comfy_session import ComfySession
    from svd_inbetween.cli.eval import evaluate
    from svd_inbetween.evaluation.harness import Scorers

    base = job["base"]
    weights = prepare_base(base)
    gt = os.path.join(base, "gt")
    os.makedirs(os.path.join(gt, "frames"))
    rng = np.random.default_rng(2)
    scene = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    with av.open(os.path.join(gt, "clip.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 96, 80, "yuv420p"
        for i in range(5):
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, 3 * i:3 * i + 96]), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    for i in range(5):
        Image.fromarray(np.roll(scene[:, :96], 4 * i, axis=0)).save(os.path.join(gt, "frames", f"{i:02d}.png"))
    ckpt = os.path.join(base, "fake_ckpt.safetensors")
    open(ckpt, "wb").close()
    session = ComfySession(base_directory=base, cpu=True, extra_custom_nodes=(os.path.join(HERE, "tiny_pack"),))
    prompts = []

    def transform(prompt):
        prompts.append(prompt)
        tiny = tiny_prompt(prompt, weights)
        sampler = next(n for n in tiny.values() if n["class_type"] == "SVDInbetweenSampler")
        sampler["inputs"].update(steps=1, recurrence=0)  # one UNet call per clip: this test is about bookkeeping
        return tiny

    def pooled(frames):
        import torch
        t = torch.from_numpy(np.asarray(frames)).double().movedim(-1, 1)
        return torch.nn.functional.adaptive_avg_pool2d(t, 2).flatten(1).numpy()

    def clip_means(clips):
        return np.asarray(clips, dtype=np.float64).mean(axis=(2, 3)).reshape(len(clips), -1)

    def abs_diff(a, b):
        return (a - b).abs().flatten(1).mean(1)

    scorers = Scorers(lpips=abs_diff, frame_features=pooled, clip_features=clip_means)
    out = os.path.join(base, "eval")
    argv = ["eval", gt, "-o", out, "--checkpoint", ckpt, "--backward", os.path.join(base, "models", "svd_inbetween", weights),
            "--frames", "5", "--window", "5", "--steps", "2", "--width", "64", "--height", "64", "--cpu",
            "--seed", "11", "--mode", "gi", "--mode", "gi_no_finetune:cfg=1.5,seed=5"]
    first = evaluate(build_parser().parse_args(argv), session, transform, scorers)
    generated_first = len(prompts)
    with open(os.path.join(out, "clips.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    second = evaluate(build_parser().parse_args(argv), session, transform, scorers)
    videos = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(os.path.join(out, "videos")) for f in fs)
    return {"summary": first, "summary_again": second, "generated": generated_first,
            "generated_on_resume": len(prompts) - generated_first,
            "sampler_seeds": [n["inputs"]["seed"] for p in prompts for n in p.values()
                              if n["class_type"] == "SVDInbetweenSampler"], "rows": rows,
            "files": sorted(os.listdir(out)), "sheets": sorted(os.listdir(os.path.join(out, "sheets"))),
            "videos": {v: video_info(os.path.join(out, v)) for v in videos},
            "plot_size": list(Image.open(os.path.join(out, "lpips_per_frame.png")).size)}


if __name__ == "__main__":
    main()
