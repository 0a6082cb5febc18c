"""Host: `svd-inbetween bench` runs, its schemes agree, and its counts and accounting are right."""
from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.host


def small_settings(**kw):
    from svd_inbetween.bench.runner import Settings
    # 3 steps, the first repeated once: 4 fused evaluations per run. With fewer than 3 karras steps a
    # step goes from sigma 700 straight to ~0 and the final latent is only resolved to ulp(700) in fp32.
    args = dict(steps=3, recurrence=1, recurrence_ratio=0.5, repeats=1)
    args.update(kw)
    return Settings(**args)


@pytest.fixture(scope="module")
def results(tiny):
    from svd_inbetween.bench.runner import run_bench
    return run_bench(small_settings(), model=tiny.model, backward=tiny.backward)


def test_bench_schemes_agree_and_count(results):
    fused = 4
    assert set(results) == {f"{m}/{s}" for m in ("gi", "gi_no_finetune", "trf")
                            for s in ("reference", "sequential", "batched")}
    for key, r in results.items():
        mode, scheme = key.split("/")
        assert r["fused_evaluations"] == fused
        assert r["max_abs_diff"] <= 1e-4, key
        assert r["repeatable"], key
        assert r["unet_videos"] == 4 * fused, key  # every scheme evaluates 2 directions x CFG 2
        assert r["unet_calls"] == (fused if scheme == "batched" else 2 * fused), key
        assert r["wall_s"] > 0 and r["peak_bytes"] >= 0
    assert results["gi/reference"]["max_abs_diff"] == 0.0


def test_bench_map_bytes(results, tiny):
    from svd_inbetween.bench.fullsize import accounting
    # all 16 layers, CFG pair, T x T fp32 maps, computed independently on the meta device
    expected = accounting(arch="tiny", width=64, height=64, frames=5, dtype=torch.float32)["maps_per_unet_call"]
    assert results["gi/reference"]["map_bytes"] == expected
    assert results["gi/sequential"]["map_bytes"] == expected  # a forward call's maps wait for the backward call
    assert results["gi/batched"]["map_bytes"] == 0
    up_only = results["gi_no_finetune/reference"]["map_bytes"]
    assert 0 < up_only < expected
    assert results["gi_no_finetune/sequential"]["map_bytes"] == up_only
    assert results["gi_no_finetune/batched"]["map_bytes"] == 0
    for scheme in ("reference", "sequential", "batched"):
        assert results[f"trf/{scheme}"]["map_bytes"] == 0


def test_reference_differs_between_modes_and_uses_backward_weights(tiny):
    """The reference is not trivially equal to something else: modes and weights change its output."""
    from svd_inbetween.bench.models import random_conds
    from svd_inbetween.bench.reference import ReferenceScheme
    from svd_inbetween.weights.apply import model_base_weights
    ps, ns, pe, ne, lat = random_conds("tiny", 64, 64, 5)
    out = {}
    for mode in ("gi", "gi_no_finetune", "trf"):
        out[mode] = ReferenceScheme(tiny.model, mode, tiny.backward).sample(ps, ns, pe, ne, lat, 0, 3, 2.0, 1, 0.5)
    stock = {p: (v.detach().clone(), o.detach().clone()) for p, (v, o) in model_base_weights(tiny.model).items()}
    out["gi_stock"] = ReferenceScheme(tiny.model, "gi", stock).sample(ps, ns, pe, ne, lat, 0, 3, 2.0, 1, 0.5)
    keys = list(out)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert (out[a] - out[b]).abs().max().item() > 1e-4, (a, b)


def test_reference_leaves_stock_sampling_untouched(tiny):
    import nodes
    from svd_inbetween.bench.models import random_conds
    from svd_inbetween.bench.reference import ReferenceScheme
    ps, ns, pe, ne, lat = random_conds("tiny", 64, 64, 5)
    before = nodes.common_ksampler(tiny.model, 3, 2, 2.0, "euler", "karras", ps, ns, lat)[0]["samples"]
    ReferenceScheme(tiny.model, "gi", tiny.backward).sample(ps, ns, pe, ne, lat, 0, 1, 2.0, 0, 0.5)
    after = nodes.common_ksampler(tiny.model, 3, 2, 2.0, "euler", "karras", ps, ns, lat)[0]["samples"]
    assert torch.equal(before, after)


def test_cli_bench_last_line_is_json(tiny, capsys, monkeypatch):
    import comfy.utils
    from svd_inbetween.cli import main
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_ENABLED", comfy.utils.PROGRESS_BAR_ENABLED)
    rc = main(["bench", "--steps", "3", "--recurrence", "0", "--repeats", "1", "--modes", "gi,trf",
               "--no-full-size-accounting"])
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])
    assert rc == 0
    assert set(data) == {f"{m}/{s}" for m in ("gi", "trf") for s in ("reference", "sequential", "batched")}
    for r in data.values():
        assert {"unet_calls", "wall_s", "peak_bytes", "map_bytes", "max_abs_diff"} <= set(r)
    assert data["gi/batched"]["unet_calls"] == 3 and data["gi/reference"]["unet_calls"] == 6
    assert any(line.startswith("gi/reference") for line in lines)


def test_bench_rejects_unknown_mode(tiny):
    from svd_inbetween.bench.runner import run_bench
    with pytest.raises(ValueError, match="--modes"):
        run_bench(small_settings(modes=("gi", "nope")), model=tiny.model, backward=tiny.backward)


def test_full_size_accounting_counts_match_analytic_and_scale():
    from torch.utils.flop_counter import FlopCounterMode
    from svd_inbetween.bench import fullsize as fs
    from svd_inbetween.bench.models import svd_base_model

    unet = svd_base_model("tiny", torch.float32, "meta").diffusion_model
    x, t, kw = fs._unet_inputs("tiny", 1, 5, 64, 64, torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, t, transformer_options={"optimized_attention_override": fs._sdpa}, **kw)
    counts = counter.get_flop_counts()
    attn1 = sum(sum(v.values()) for k, v in counts.items() if k.endswith("time_stack.0.attn1"))
    total, layers = fs.count_flops(unet, "tiny", 5, 64, 64, torch.float32)
    assert len(layers) == 16
    assert attn1 == sum(sum(fs.temporal_attn1_flops(layer, 5).values()) for layer in layers)
    assert total == counter.get_total_flops()

    a = fs.accounting(arch="tiny", width=64, height=64, frames=5, steps=50, dtype=torch.float32)
    assert a["fused_evaluations"] == 175
    assert a["unet_calls"] == {"reference": 350, "sequential": 350, "batched": 175}
    memory = a["memory"]
    assert memory["reference"]["weights"] == 2 * a["unet_params"] * 4
    # maps held: the traced reference and sequential code hold exactly one call's maps, batched none
    assert memory["reference"]["maps"] == memory["sequential"]["maps"] == a["maps_per_unet_call"] > 0
    assert memory["batched"]["maps"] == 0
    assert all(m["call_peak"] > m["maps"] for m in memory.values())
    assert a["floor_s"]["reference"] == pytest.approx(175 * 4 * a["flops_per_video_call"] / fs.H100_BF16_DENSE_FLOPS)


def test_full_size_memory_targets_by_accounting():
    """SVD-XT at 1024x576x25 fp16 (meta device): sequential fits a 16 GB card (<= 15 GB) and batched peaks no
    higher than the two-UNet reference. Without per-video feed-forwards batched would be 17.8 GiB here."""
    from svd_inbetween.bench import fullsize as fs
    memory = fs.accounting()["memory"]
    assert memory["sequential"]["total"] <= 15e9
    assert memory["batched"]["total"] <= memory["reference"]["total"]
    assert memory["batched"]["maps"] == 0 < memory["sequential"]["maps"] == memory["reference"]["maps"]


def test_bench_scheme_and_cap_arguments_are_checked(tiny):
    from svd_inbetween.bench.runner import run_bench
    with pytest.raises(ValueError, match="--schemes must name reference"):
        run_bench(small_settings(schemes=("batched",)), model=tiny.model, backward=tiny.backward)
    for schemes in (("reference", "fastest"), ("reference", "batched", "batched")):
        with pytest.raises(ValueError, match="--schemes"):
            run_bench(small_settings(schemes=schemes), model=tiny.model, backward=tiny.backward)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--memory-cap-gib needs a CUDA device"):
            run_bench(small_settings(memory_cap_gib=16.0), model=tiny.model, backward=tiny.backward)


def test_bench_reports_out_of_memory_instead_of_crashing(tiny, monkeypatch):
    """Under --memory-cap-gib a scheme that runs out is a row of the table (an OOM is forced here)."""
    from svd_inbetween.bench import runner
    real_ours, real_reference = runner.run_ours, runner.run_reference

    def ours(model, execution, *args):
        if execution == "batched":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_ours(model, execution, *args)
    monkeypatch.setattr(runner, "run_ours", ours)
    # reference not first: every other scheme still gets its warm-up and its rows
    s = small_settings(modes=("trf",), steps=3, recurrence=0, schemes=("sequential", "reference", "batched"))
    results = runner.run_bench(s, model=tiny.model, backward=tiny.backward)
    assert results["trf/batched"]["oom"] and "Tried to allocate" in results["trf/batched"]["error"]
    assert not results["trf/sequential"]["oom"] and results["trf/sequential"]["max_abs_diff"] <= 1e-4
    seq = results["trf/sequential"]
    assert seq["achieved_tflops"] == pytest.approx(seq["unet_videos"] * runner.flops_per_video(s) / seq["wall_s"]
                                                   / 1e12, rel=2e-3)
    table = runner.format_table(s, results, "CPU test")
    assert any(line.startswith("trf/batched") and "OUT OF MEMORY" in line for line in table)
    json.loads(runner.json_line(results))

    def reference(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (reference)")
    monkeypatch.setattr(runner, "run_reference", reference)
    monkeypatch.setattr(runner, "run_ours", real_ours)
    results = runner.run_bench(s, model=tiny.model, backward=tiny.backward)
    assert results["trf/reference"]["oom"]
    seq = results["trf/sequential"]
    assert not seq["oom"] and seq["max_abs_diff"] is None and seq["wall_ratio"] is None
    line = next(x for x in runner.format_table(s, results, "CPU test") if x.startswith("trf/sequential"))
    assert line.split()[-1] == "n/a"
