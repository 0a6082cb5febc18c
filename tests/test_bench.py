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
                            for s in ("reference", "sequential", "batched", "lowvram")}
    for key, r in results.items():
        mode, scheme = key.split("/")
        assert r["fused_evaluations"] == fused
        assert r["max_abs_diff"] <= 1e-4, key
        assert r["repeatable"], key
        assert r["unet_videos"] == 4 * fused, key  # every scheme evaluates 2 directions x CFG 2
        assert r["unet_calls"] == {"batched": 1, "lowvram": 4}.get(scheme, 2) * fused, key
        assert r["wall_s"] > 0 and r["peak_bytes"] >= 0
    assert results["gi/reference"]["max_abs_diff"] == 0.0


def test_bench_map_bytes(results, tiny):
    from svd_inbetween.bench.fullsize import accounting
    # all 16 layers, CFG pair, T x T fp32 maps, computed independently on the meta device
    expected = accounting(arch="tiny", width=64, height=64, frames=5, dtype=torch.float32)["maps_per_unet_call"]
    assert results["gi/reference"]["map_bytes"] == expected
    assert results["gi/sequential"]["map_bytes"] == expected  # a forward call's maps wait for the backward call
    assert results["gi/batched"]["map_bytes"] == 0
    assert 2 * results["gi/lowvram"]["map_bytes"] == expected  # one video's maps wait for its partner's call
    up_only = results["gi_no_finetune/reference"]["map_bytes"]
    assert 0 < up_only < expected
    assert results["gi_no_finetune/sequential"]["map_bytes"] == up_only
    assert results["gi_no_finetune/batched"]["map_bytes"] == 0
    assert 2 * results["gi_no_finetune/lowvram"]["map_bytes"] == up_only
    for scheme in ("reference", "sequential", "batched", "lowvram"):
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
    from fixtures_host import stock_ksampler
    from svd_inbetween.bench.models import random_conds
    from svd_inbetween.bench.reference import ReferenceScheme
    ps, ns, pe, ne, lat = random_conds("tiny", 64, 64, 5)
    before = stock_ksampler(tiny.model, (ps, ns, pe, ne, lat), 3, 2)
    ReferenceScheme(tiny.model, "gi", tiny.backward).sample(ps, ns, pe, ne, lat, 0, 1, 2.0, 0, 0.5)
    after = stock_ksampler(tiny.model, (ps, ns, pe, ne, lat), 3, 2)
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
    assert set(data) == {f"{m}/{s}" for m in ("gi", "trf") for s in ("reference", "sequential", "batched", "lowvram")}
    for r in data.values():
        assert {"unet_calls", "wall_s", "peak_bytes", "map_bytes", "max_abs_diff"} <= set(r)
    assert data["gi/batched"]["unet_calls"] == 3 and data["gi/reference"]["unet_calls"] == 6
    assert data["gi/lowvram"]["unet_calls"] == 12
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
    assert a["unet_calls"] == {"reference": 350, "sequential": 350, "batched": 175, "lowvram": 700}
    memory = a["memory"]
    assert memory["reference"]["weights"] == 2 * a["unet_params"] * 4
    # maps held: the traced reference and sequential code hold exactly one call's maps, batched none
    assert memory["reference"]["maps"] == memory["sequential"]["maps"] == a["maps_per_unet_call"] > 0
    assert memory["batched"]["maps"] == 0
    assert 2 * memory["lowvram"]["maps"] == a["maps_per_unet_call"]
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


@pytest.fixture(scope="module")
def lowvram_full_size():
    """The GI workflow's accounting at 1024x576x25 fp16 with the lowvram execution traced (meta device)."""
    from svd_inbetween.bench.workflow import workflow_accounting
    return workflow_accounting(1024, 576, 25, executions=("lowvram",))


def test_lowvram_fits_an_8gb_card_by_the_accounting(lowvram_full_size):
    """Every model's fp16 weights + the peak of each phase (CLIP vision, VAE encode, sampling, VAE decode in the
    batches ComfyUI picks) <= 7.0 GiB, what an 8 GB card leaves; auto runs lowvram there."""
    from svd_inbetween.bench import workflow as wf
    acc = lowvram_full_size
    gib = 2**30
    plan = wf.card_plan(acc, 8)
    assert plan["usable"] == 7.0 * gib and plan["auto"] == "lowvram" and plan["decode_frames"] == 1
    assert plan["total"] <= 7.0 * gib and plan["fits"]
    assert plan["total"] == wf.weights_total(acc) + max(plan["phases"].values())
    assert set(plan["phases"]) == {"clip_vision", "vae_encode", "sampling", "vae_decode"}
    # the model sizes ComfyUI loads: SVD-XT UNet 1.525 B, ViT-H vision tower 632 M, temporal VAE 97.7 M params
    assert abs(acc["unet_weights"] / 2 - 1.5246e9) < 1e6
    # (ComfyUI 0.3.64's CLIP vision class holds 1.3 M more parameters than 0.33's: within 0.3%)
    assert abs(acc["clip_vision_weights"] / 2 / 632.08e6 - 1) < 3e-3 and abs(acc["vae_weights"] / 2 - 97.74e6) < 1e5
    low = acc["executions"]["lowvram"]
    assert low["calls"] == 4 and abs(low["estimate"] / low["peak"] - 1) < 0.02
    # ComfyUI's decode estimate per frame stays above the traced per-frame peak, so its batches fit
    assert wf.vae_decode_peak(2, 1024, 576) < 2 * wf.vae(torch.bfloat16).memory_used_decode((2, 4, 72, 128),
                                                                                           torch.bfloat16)


def test_auto_estimate_matches_the_tracer_on_svd_xt():
    """samplers.execution's fitted estimate (what auto decides with) against the tracer at sizes it was not
    fitted at, and its analytic map bytes against the maps the traced layers hold."""
    from svd_inbetween.bench.fullsize import map_bytes
    from svd_inbetween.bench import fullsize as fs
    from svd_inbetween.bench.models import svd_base_model
    from svd_inbetween.samplers.execution import activation_terms, estimate_bytes
    unet = svd_base_model("full", torch.float16, "meta").diffusion_model
    paths = fs._temporal_paths(unet)
    for width, height, frames in ((640, 384, 25), (896, 512, 14)):
        u, m = activation_terms(unet, frames, height // 8, width // 8, 2, paths)
        _, layers = fs.count_flops(unet, "full", frames, height, width, torch.float16)
        assert m == sum(map_bytes(layer.rows, layer.heads, frames, 2) for layer in layers)
        assert u == frames * (height // 8) * (width // 8) * 320 * 2
        with fs.inbetween_patches(unet):
            for e in fs.OURS:
                traced = fs.trace_execution(unet, "full", e, frames, height, width, torch.float16)["peak"]
                assert abs(estimate_bytes(e, u, m) / traced - 1) < 0.03, (e, width, height, frames)


def test_check_accounting_measures_what_the_tracer_predicts(tmp_path):
    """`svd-inbetween bench --check-accounting` (own process: PyTorch attention, fixed mmap threshold) on the tiny
    UNet at 256x256x8: every execution's peak RSS above the loaded model within 20% of the traced prediction."""
    from api_cli import cli
    from host import COMFYUI_PATH
    proc = cli("bench", "--comfyui", COMFYUI_PATH, "--cpu", "--check-accounting", "--arch", "tiny", "--width", "256",
               "--height", "256", "--frames", "8", "--steps", "1", "--recurrence", "0", timeout=900)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(data) == {"sequential", "batched", "lowvram"}
    for e, r in data.items():
        assert r["agrees"] and abs(r["ratio"] - 1) <= 0.2, (e, r)
    assert data["lowvram"]["measured_bytes"] < data["sequential"]["measured_bytes"] < data["batched"]["measured_bytes"]
    assert [data[e]["unet_calls"] for e in ("batched", "sequential", "lowvram")] == [1, 2, 4]


def test_schedules_count_calls_and_trace_every_modes_largest_call(tiny):
    """`bench --schedules`: the UNet calls each mode makes per clip (as the samplers send them) and the
    memory of its largest call per execution (tiny architecture on the meta device here)."""
    from svd_inbetween.bench.schedules import chunk_sets, format_schedules, requests, schedule_memory
    assert len(requests("vibid", 25)) == 50 and len(requests("mpd", 25)) == 65
    assert len(requests("mpd_trf", 25)) == 97 and len(requests("gi", 50)) == 175
    assert chunk_sets("mpd_trf", 1.0) == {(2, 3), (0, 1), (1, 2, 3)}  # fused at cfg 1: no backward uncond
    assert chunk_sets("mpd_gi", 1.0) == {(2, 3), (0, 1, 2, 3)}  # its backward calls carry the forward chunks
    assert chunk_sets("gi", 2.0) == {(0, 1, 2, 3)}
    mem = schedule_memory("tiny", 64, 64, 5, torch.float32, modes=("vibid", "mpd_trf", "gi"))
    for execution in ("sequential", "batched", "lowvram"):
        # a vibid call holds two videos, mpd_trf's fused call three, gi's four with rotation: never more than gi
        assert mem["vibid"][execution]["call_peak"] <= mem["mpd_trf"][execution]["call_peak"]
        assert mem["mpd_trf"][execution]["call_peak"] <= mem["gi"][execution]["call_peak"]
        assert mem["gi"][execution]["weights"] > mem["vibid"][execution]["weights"]  # W' held for gi
    assert mem["mpd_trf"]["batched"]["call_peak"] > mem["vibid"]["batched"]["call_peak"]
    lines = format_schedules({}, mem, "test", "tiny")
    assert any(line.split()[0] == "mpd_trf" for line in lines[1:] if line.strip())
