"""Helpers for the API client tests: run `svd-inbetween` in a subprocess, tiny workflows, keyframes,
what the servers ran (their /history) and what the manifest says."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from host import REPO

HERE = os.path.dirname(os.path.abspath(__file__))
# the repo as package `svd_inbetween` whatever its folder is called, then the console command
RUNNER = ("import sys; sys.path.insert(0, {here!r}); from host import import_pack; import_pack(); "
          "from svd_inbetween.cli import main; sys.exit(main(sys.argv[1:]))").format(here=HERE)
TINY_FLAGS = ["--no-progress", "--timeout", "120", "--server-wait", "60"]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, *map(str, args)]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=env)


def tiny_workflow(path: str, weights: str, save_latent: bool = False, **sampler) -> str:
    """The shipped full workflow with the tiny models (tests/tiny_pack) at 64x64x5, 2 steps."""
    from comfy_job import tiny_prompt
    with open(os.path.join(REPO, "workflows", "api", "svd_inbetween_gi.json")) as f:
        prompt = tiny_prompt(json.load(f), weights)
    sampler_id = next(k for k, n in prompt.items() if n["class_type"] == "SVDInbetweenSampler")
    prompt[sampler_id]["inputs"].update(sampler)
    if save_latent:
        prompt["20"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0],
                                                                "filename_prefix": "latents/tiny"}}
    with open(path, "w") as f:
        json.dump(prompt, f, indent=1)
    return path


def keyframes(folder: str, n: int, seed: int = 0, size: int = 64) -> list[str]:
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(os.path.join(folder, f"k{i:02d}.png"))
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def prompts_run(servers) -> int:
    """Prompts the servers accepted so far (every accepted POST /prompt ends in /history)."""
    return sum(len(s.get("/history")) for s in servers if s.proc is not None and s.proc.poll() is None)


def manifest(folder: str) -> list[dict]:
    with open(os.path.join(folder, "svd_inbetween_manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


def last_status(records: list[dict]) -> dict[str, dict]:
    out = {}
    for rec in records:
        out[rec["pair"]] = rec
    return out


def leftovers(folder: str) -> list[str]:
    """Temporary download files that were never renamed (a torn write)."""
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if ".part-" in f]


def failure(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
