"""Host: backward-motion fine-tuning on the tiny random SVD in real ComfyUI."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from test_train_data import moving_square, write_frames, write_mp4

pytestmark = pytest.mark.host

FRAMES, SIZE = 5, 64
STEPS, SAVE_EVERY = 24, 16


@pytest.fixture(scope="module")
def one_thread():
    """Two shared cores: one intra-op thread per process avoids OpenMP thrashing (10x here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    write_frames(str(root / "square"), moving_square(FRAMES, SIZE, SIZE, step=6))
    write_mp4(str(root / "square.mp4"), moving_square(8, SIZE, SIZE, step=4, color=(0, 200, 255)))
    return str(root)


class FixedBatch:
    """Every sample is the same clip with the same noise (sample id 0): an overfitting check."""

    def __init__(self, clip):
        self.clip = clip

    def __getitem__(self, index):
        return {"id": 0, "pixels": self.clip}


def config(out: str, **kw):
    from svd_inbetween.weights.train import TrainConfig
    args = dict(steps=STEPS, batch_size=1, lr=1e-3, output=out, save_every=SAVE_EVERY, num_workers=0,
                progress=False, seed=0)
    args.update(kw)
    return TrainConfig(**args)


def snapshot(model_patcher) -> dict[str, torch.Tensor]:
    """The shared module's own tensors (unloading first removes any clone's object patches)."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    return {k: v.detach().clone() for k, v in model_patcher.model.state_dict().items()}


@pytest.fixture(scope="module")
def run(tiny, data, one_thread, tmp_path_factory):
    from svd_inbetween.weights.train import train
    from svd_inbetween.weights.train_data import ClipDataset
    ds = ClipDataset(data, FRAMES, SIZE, SIZE)
    clip = ds.clip([s.path for s in ds.sources].index(os.path.join(data, "square")), 0)
    before = snapshot(tiny.model)
    grad_flags = {n: p.requires_grad for n, p in tiny.model.model.named_parameters()}
    out = str(tmp_path_factory.mktemp("train_out") / "backward.safetensors")
    cfg = config(out)
    result = train(tiny.model, tiny.clip_vision, tiny.vae, FixedBatch(clip), cfg)
    return SimpleNamespace(cfg=cfg, result=result, before=before, grad_flags=grad_flags, clip=clip, out=out)


def base_model_with_copies(tiny):
    """Proxies holding W' = W: the backward model before any training."""
    from svd_inbetween.attention_patch.layers import with_proxies
    from svd_inbetween.weights.apply import model_base_weights
    return with_proxies(tiny.model, {p: (v.detach().clone(), o.detach().clone())
                                     for p, (v, o) in model_base_weights(tiny.model).items()})


def test_loss_on_fixed_batch_drops(tiny, run):
    from svd_inbetween.weights.apply import apply_backward_weights
    from svd_inbetween.weights.train import evaluate
    losses = run.result.losses
    print(f"fixed-batch loss: step 1 {losses[0]:.4f}, step {STEPS} {losses[-1]:.4f}")
    assert len(losses) == STEPS and torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < 0.85 * losses[0]
    batch = run.clip[None]
    start = evaluate(base_model_with_copies(tiny), tiny.clip_vision, tiny.vae, batch, [0], run.cfg)
    end = evaluate(apply_backward_weights(tiny.model, run.out), tiny.clip_vision, tiny.vae, batch, [0], run.cfg)
    # the inference path (proxies from a file) sees the same loss as the trainer did
    assert abs(start - losses[0]) < 1e-5 * losses[0]
    assert end < losses[-1] and end < 0.85 * start


def test_only_the_32_tensors_change(tiny, run):
    from svd_inbetween.weights.apply import model_base_weights
    from svd_inbetween.weights.format import key_out, key_v, read_backward_weights
    after = snapshot(tiny.model)
    assert after.keys() == run.before.keys()
    changed = [k for k in after if not torch.equal(after[k], run.before[k])]
    assert changed == []
    assert {n: p.requires_grad for n, p in tiny.model.model.named_parameters()} == run.grad_flags
    assert all(p.grad is None for p in tiny.model.model.parameters())

    tensors, meta = read_backward_weights(run.out)
    assert meta["kind"] == "absolute" and meta["step"] == str(STEPS) and meta["frames"] == str(FRAMES)
    base = model_base_weights(tiny.model)
    assert len(tensors) == 32 == 2 * len(base)
    for path, (wv, wo) in base.items():
        for key, ref in ((key_v(path), wv), (key_out(path), wo)):
            assert tensors[key].dtype == torch.float32
            assert (tensors[key] - ref).abs().max().item() > 1e-4, f"{key} did not train"
        assert torch.equal(tensors[key_v(path)], run.result.weights[path][0])


def test_checkpoints_and_resume_continue_exactly(tiny, run):
    from svd_inbetween.weights.train import train
    from svd_inbetween.weights.train_state import state_file, step_file
    mid = step_file(run.out, SAVE_EVERY)
    assert run.result.files == [mid, state_file(mid), run.out, state_file(run.out)]
    assert all(os.path.isfile(f) for f in run.result.files)
    out = os.path.join(os.path.dirname(run.out), "resumed.safetensors")
    resumed = train(tiny.model, tiny.clip_vision, tiny.vae, FixedBatch(run.clip),
                    config(out, resume=mid, save_every=0))
    assert resumed.step == STEPS
    assert resumed.losses == run.result.losses[SAVE_EVERY:]
    for path, (wv, wo) in run.result.weights.items():
        assert torch.equal(resumed.weights[path][0], wv) and torch.equal(resumed.weights[path][1], wo)


def test_saved_file_drives_inbetween_sampling(tiny, run):
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    from svd_inbetween.weights.apply import apply_backward_weights
    lat = tiny.conds[4]
    settings = GenerationSettings(seed=3, steps=4, cfg=2.0, mode="gi", recurrence=1, recurrence_ratio=0.5,
                                  execution="batched")
    trained = sample_inbetween("test", apply_backward_weights(tiny.model, run.out), tiny.keyframe_conds, lat, settings)
    untrained = sample_inbetween("test", base_model_with_copies(tiny), tiny.keyframe_conds, lat, settings)
    out = trained["samples"]
    assert out.shape == lat["samples"].shape and torch.isfinite(out).all()
    assert (out - untrained["samples"]).abs().max().item() > 1e-4


def test_gradient_checkpointing_gives_the_same_gradients(tiny, run, one_thread):
    from svd_inbetween.attention_patch.layers import temporal_attn1_paths
    from svd_inbetween.weights import train as tr
    base = {p: (v.detach().float(), o.detach().float()) for p, (v, o) in tr.model_base_weights(tiny.model).items()}
    m, params, _ = tr.trainable_clone(tiny.model, base)
    enc = tr.encode_batch(m, tiny.clip_vision, tiny.vae, run.clip[None], [5], run.cfg)
    paths = temporal_attn1_paths(m)
    grads = []
    try:
        tr._load(m)
        with tr.frozen_except(m.model, params):
            for ckpt in (False, True):
                ctx = tr.gradient_checkpointing(m.model.diffusion_model) if ckpt else torch.enable_grad()
                with ctx:
                    loss = tr.sample_losses(m, enc, paths).mean()
                    got = torch.autograd.grad(loss, params)
                grads.append((loss.item(), got))
    finally:
        tr._unload(m)
    (l0, g0), (l1, g1) = grads
    assert l0 == pytest.approx(l1, rel=1e-6)
    worst = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(g0, g1))
    assert all(g.abs().max() > 0 for g in g0)
    assert worst < 1e-5
    assert "forward" not in vars(m.model.diffusion_model.input_blocks[1][0])  # the override is gone


def test_state_file_roundtrip_and_delta_kind(tmp_path):
    """save_checkpoint/load_resume on plain tensors: delta files resolve to the same W'."""
    from svd_inbetween.weights.format import BackwardWeightsError
    from svd_inbetween.weights.train import TrainConfig
    from svd_inbetween.weights.train_state import load_resume, save_checkpoint, state_file
    g = torch.Generator().manual_seed(0)
    base = {f"input_blocks.{i}.1.time_stack.0.attn1": (torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g))
            for i in (1, 2)}
    params = [torch.nn.Parameter(t + 0.5) for pair in base.values() for t in pair]
    names = [f"{p}.{s}" for p in base for s in ("to_v", "to_out.0")]
    opt = torch.optim.AdamW(params, lr=1e-2)
    sum((p ** 2).sum() for p in params).backward()
    opt.step()
    weights = {p: (params[2 * i], params[2 * i + 1]) for i, p in enumerate(base)}
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for kind in ("absolute", "delta"):
        f = str(tmp_path / f"{kind}.safetensors")
        save_checkpoint(f, weights, base, kind, {"step": 7}, 7, opt, scaler, names, TrainConfig())
        state = load_resume(f, base)
        assert state.step == 7
        for p, (wv, wo) in weights.items():
            assert torch.allclose(state.weights[p][0], wv.detach()) and torch.allclose(state.weights[p][1], wo.detach())
        fresh = torch.optim.AdamW(params, lr=5e-3)
        state.restore(fresh, scaler, names)
        assert fresh.param_groups[0]["lr"] == 5e-3
        for p in params:
            assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    os.remove(state_file(f))
    with pytest.raises(BackwardWeightsError, match="resume needs the state file"):
        load_resume(f, base)


def test_cli_registers_train_and_checks_inputs(tmp_path):
    from svd_inbetween.cli import build_parser, main
    args = build_parser().parse_args(["train", "--checkpoint", "svd.safetensors", "--data", "d", "-o", "b.safetensors",
                                      "--mixed-precision", "bf16", "--gradient-checkpointing", "--steps", "3"])
    assert (args.steps, args.batch_size, args.lr, args.frames, args.mixed_precision) == (3, 4, 1e-4, 14, "bf16")
    assert args.gradient_checkpointing and args.func.__module__.endswith("cli.train")
    with pytest.raises(SystemExit, match="no such .safetensors file"):
        main(["train", "--checkpoint", str(tmp_path / "svd.ckpt"), "--data", "d", "-o", "o.safetensors"])
    ckpt = tmp_path / "svd.safetensors"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit, match="multiples of 64"):
        main(["train", "--checkpoint", str(ckpt), "--data", "d", "-o", "o.safetensors", "--width", "1000"])


def tiny_model_in(dtype):
    """The fixture's tiny SVD (same seed, same weights up to rounding) stored and run in `dtype`."""
    from svd_inbetween.bench.models import svd_patcher
    return svd_patcher("tiny", dtype)


def test_bf16_model_trains_fp32_masters(tiny, run, tmp_path):
    from svd_inbetween.weights.format import read_backward_weights
    from svd_inbetween.weights.train import compute_dtype, train
    model = tiny_model_in(torch.bfloat16)
    assert compute_dtype(model) == torch.bfloat16
    out = str(tmp_path / "bf16.safetensors")
    result = train(model, tiny.clip_vision, tiny.vae, FixedBatch(run.clip), config(out, steps=3, save_every=0))
    print(f"bf16 losses {result.losses} vs fp32 {run.result.losses[:3]}")
    assert result.losses[0] == pytest.approx(run.result.losses[0], rel=0.05)
    assert result.losses[2] < result.losses[0]
    tensors, _ = read_backward_weights(out)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    # the updates live in fp32 masters: most trained values are not bf16-representable
    w = next(iter(result.weights.values()))[0]
    assert (w != w.bfloat16().float()).float().mean() > 0.5


def test_cli_trains_with_the_loaded_checkpoint(tiny, data, tmp_path, monkeypatch, one_thread):
    """`svd-inbetween train` end to end, with the checkpoint loader answering with the tiny models."""
    import comfy.sd
    from svd_inbetween.cli import main
    from svd_inbetween.weights.format import read_backward_weights
    asked = {}

    def fake_loader(path, output_vae=True, output_clip=True, output_clipvision=False, model_options={}, **kw):
        asked.update(path=path, clipvision=output_clipvision, dtype=model_options.get("dtype"))
        return tiny.model, None, tiny.vae, tiny.clip_vision
    monkeypatch.setattr(comfy.sd, "load_checkpoint_guess_config", fake_loader)
    out = str(tmp_path / "cli" / "backward.safetensors")
    ckpt = tmp_path / "svd.safetensors"
    ckpt.write_bytes(b"")
    rc = main(["train", "--checkpoint", str(ckpt), "--data", data, "-o", out, "--steps", "2",
               "--batch-size", "2", "--frames", str(FRAMES), "--width", "64", "--height", "64", "--stride", "1",
               "--workers", "0", "--mixed-precision", "no", "--no-progress", "--cpu", "--save-every", "0"])
    assert rc == 0 and asked == {"path": str(ckpt), "clipvision": True, "dtype": torch.float32}
    tensors, meta = read_backward_weights(out)
    assert len(tensors) == 32 and meta["step"] == "2" and meta["base"] == "svd.safetensors"
    assert meta["mixed_precision"] == "no"
