"""Host: two-process DDP training on the CPU (gloo) through torchrun.

Run as a script, this file is the torchrun worker: each rank builds the same tiny
random SVD, trains, and writes its own copy of the final weights.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, BATCH = 2, 2
FRAMES, SIZE = 5, 64


def train_config(out: str):
    from svd_inbetween.weights.train import TrainConfig
    return TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, output=out, save_every=1, num_workers=0,
                       progress=False, seed=1)


def train_tiny(data: str, out: str):
    import tiny_models as tm
    from svd_inbetween.weights.train import train
    from svd_inbetween.weights.train_data import ClipDataset
    dataset = ClipDataset(data, FRAMES, SIZE, SIZE, stride=1, seed=1)
    return train(tm.tiny_svd_model(), tm.tiny_clip_vision(), tm.tiny_vae(), dataset, train_config(out))


def flat(weights) -> dict[str, torch.Tensor]:
    return {f"{p}.{i}": t.contiguous() for p, pair in weights.items() for i, t in enumerate(pair)}


def _worker(data: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    from host import import_pack, setup_comfy
    setup_comfy()
    import_pack()
    dist.init_process_group("gloo")
    try:
        result = train_tiny(data, out)
        rank = dist.get_rank()
        save_file(flat(result.weights), os.path.join(os.path.dirname(out), f"rank{rank}.safetensors"),
                  metadata={"losses": ",".join(map(str, result.losses)), "world": str(dist.get_world_size())})
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    _worker(sys.argv[1], sys.argv[2])
    sys.exit(0)


pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from test_train_data import moving_square, write_frames, write_mp4
    root = tmp_path_factory.mktemp("ddp_data")
    write_frames(str(root / "a"), moving_square(7, SIZE, SIZE, step=5))
    write_mp4(str(root / "b.mp4"), moving_square(9, SIZE, SIZE, step=4, color=(0, 200, 255)))
    return str(root)


def test_two_process_ddp_matches_one_process(data, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "ddp" / "backward.safetensors"
    out.parent.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get(
        "PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "test_train_ddp.py"), data, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    ranks = []
    for r in range(2):
        with safe_open(str(out.parent / f"rank{r}.safetensors"), framework="pt") as f:
            ranks.append(({k: f.get_tensor(k) for k in f.keys()}, f.metadata()))
    (w0, m0), (w1, m1) = ranks
    assert m0["world"] == "2" and w0.keys() == w1.keys() and len(w0) == 32
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks ended with different weights"
    assert m0["losses"] == m1["losses"]  # the logged loss is all-reduced
    assert out.is_file() and (out.parent / "backward-step000001.safetensors").is_file()

    # One process with gradient accumulation sees the same samples and noise: same result up to fp32 rounding.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_tiny(data, str(tmp_path / "single" / "backward.safetensors"))
    finally:
        torch.set_num_threads(n)
    ref = flat(single.weights)
    diff = max((ref[k] - w0[k]).abs().max().item() for k in ref)
    moved = max((ref[k] - before).abs().max().item() for k, before in flat(base_weights()).items())
    print(f"DDP vs one process: max abs diff {diff:.3g}; training moved weights by up to {moved:.3g}")
    assert [float(x) for x in m0["losses"].split(",")] == pytest.approx(single.losses, rel=1e-4)
    assert moved > 1e-3 and diff < 1e-3 * moved


def base_weights():
    import tiny_models as tm
    from svd_inbetween.weights.apply import model_base_weights
    return {p: (v.detach().float(), o.detach().float()) for p, (v, o) in model_base_weights(tm.tiny_svd_model()).items()}
