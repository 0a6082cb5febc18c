"""Host: identities of the sampler on tiny random SVD models in real ComfyUI."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.host

STEPS = 4


def run(tiny, model=None, **kw):
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    lat = tiny.conds[4]
    args = dict(seed=3, steps=STEPS, cfg=2.0, mode="gi", recurrence=5, recurrence_ratio=0.5, forward_weight=0.5,
                execution="batched")
    args.update(kw)
    return sample_inbetween("test", model or tiny.model_gi, tiny.keyframe_conds, lat,
                            GenerationSettings(**args))["samples"]


def ksampler(tiny, model=None, seed=3, cfg=2.0):
    from fixtures_host import stock_ksampler
    return stock_ksampler(model or tiny.model, tiny.conds, seed, STEPS, cfg)


@pytest.mark.parametrize("mode", ["gi", "gi_no_finetune", "trf"])
@pytest.mark.parametrize("cfg", [2.0, 1.0])
def test_forward_only_reproduces_ksampler(tiny, mode, cfg):
    ref = ksampler(tiny, cfg=cfg)
    ours = run(tiny, mode=mode, forward_weight=1.0, recurrence=0, cfg=cfg)
    assert (ours - ref).abs().max().item() == 0.0


@pytest.mark.parametrize("mode", ["gi", "gi_no_finetune", "trf"])
def test_batched_equals_sequential(tiny, mode):
    b = run(tiny, mode=mode, execution="batched")
    s = run(tiny, mode=mode, execution="sequential")
    diff = (b - s).abs().max().item()
    print(f"{mode}: batched vs sequential max abs diff {diff:.3g}")
    assert diff <= 1e-4


def test_same_seed_same_video_other_seed_differs(tiny):
    a, b, c = run(tiny, seed=11), run(tiny, seed=11), run(tiny, seed=12)
    assert torch.equal(a, b)
    assert (a - c).abs().max().item() > 1e-2


def test_recurrence_changes_the_result_and_is_seeded(tiny):
    r0 = run(tiny, recurrence=0)
    r5 = run(tiny, recurrence=5)
    assert (r0 - r5).abs().max().item() > 1e-3


def test_modes_and_fusion_differ(tiny):
    outs = {m: run(tiny, mode=m) for m in ("gi", "gi_no_finetune", "trf")}
    fwd = run(tiny, forward_weight=1.0)
    for m, o in outs.items():
        assert (o - fwd).abs().max().item() > 1e-3, m
    assert (outs["gi"] - outs["trf"]).abs().max().item() > 1e-4
    assert (outs["gi"] - outs["gi_no_finetune"]).abs().max().item() > 1e-4
    assert (outs["gi_no_finetune"] - outs["trf"]).abs().max().item() > 1e-4


def test_gi_with_stock_weights_equals_gi_no_finetune_only_in_rotated_layers(tiny):
    """gi with W' = W rotates all 16 layers; gi_no_finetune only the up blocks: must differ."""
    from svd_inbetween.attention_patch.layers import with_proxies
    from svd_inbetween.weights.apply import model_base_weights
    same = with_proxies(tiny.model, {p: (v.detach().clone(), o.detach().clone())
                                     for p, (v, o) in model_base_weights(tiny.model).items()})
    assert (run(tiny, same, mode="gi") - run(tiny, same, mode="gi_no_finetune")).abs().max().item() > 1e-4


def test_stock_model_untouched_after_runs_errors_and_interrupts(tiny):
    import comfy.model_management
    ref = ksampler(tiny)
    run(tiny)
    assert torch.equal(ksampler(tiny), ref)
    run(tiny, execution="sequential", mode="gi_no_finetune")
    assert torch.equal(ksampler(tiny), ref)

    from svd_inbetween.samplers.run import sample_inbetween

    from svd_inbetween.samplers.settings import GenerationSettings
    lat = tiny.conds[4]
    calls = []

    def interrupt_at_second_step(step, x0, x, total):
        calls.append(step)
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample_inbetween("test", tiny.model_gi, tiny.keyframe_conds, lat,
                         GenerationSettings(seed=3, steps=STEPS, cfg=2.0, execution="sequential"),
                         callback=interrupt_at_second_step)
    assert calls == [0, 1]
    assert torch.equal(ksampler(tiny), ref)

    def boom(apply_model, args):
        raise RuntimeError("boom")
    broken = tiny.model_gi.clone()
    broken.set_model_unet_function_wrapper(boom)
    with pytest.raises(RuntimeError, match="boom"):
        run(tiny, broken)
    assert torch.equal(ksampler(tiny), ref)
    # the run that follows an interrupted one is unaffected
    assert torch.equal(run(tiny), run(tiny))


def test_custom_advanced_equals_all_in_one(tiny):
    from fixtures_host import sample_custom_advanced
    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenRecurrentEuler

    ps, ns, pe, ne, lat = tiny.conds
    guider = SVDInbetweenGuider.execute(tiny.model_gi, ps, ns, pe, ne, 2.0, "gi", 0.5, "batched").args[0]
    sampler = SVDInbetweenRecurrentEuler.execute(5, 0.5).args[0]
    samples = sample_custom_advanced(tiny.model, guider, sampler, lat, seed=3, steps=STEPS)
    assert torch.equal(samples, run(tiny))


def test_linear_guidance_matches_stock_video_linear_cfg_forward_only(tiny):
    from comfy_extras.nodes_video_model import VideoLinearCFGGuidance
    stock = VideoLinearCFGGuidance().patch(tiny.model, 1.0)[0]
    ref = ksampler(tiny, model=stock, cfg=3.0)
    ours = run(tiny, forward_weight=1.0, recurrence=0, cfg=3.0, guidance="linear", min_cfg=1.0)
    assert (ours - ref).abs().max().item() == 0.0
    assert (run(tiny, guidance="linear", cfg=3.0) - run(tiny, cfg=3.0)).abs().max().item() > 1e-4


class _UnusableClone:
    """Stands in for a MultiGPU CFG Split device clone; any use of it fails the test."""

    def __deepcopy__(self, memo):  # model options are copied on the way in; copying is not using
        return self

    def __getattr__(self, name):
        raise AssertionError(f"the dual-direction call used a multi-GPU clone ({name})")


@pytest.mark.parametrize("execution", ["batched", "sequential"])
def test_multigpu_split_keeps_forward_and_backward_together(tiny, execution, caplog):
    """ComfyUI 0.33's MultiGPU CFG Split hands calc_cond_batch per-device clones under
    model_options["multigpu_clones"]; our dual-direction calls must not be split (a backward
    chunk needs its forward partner's maps), and the video must be the one a single device gives."""
    import torch as _torch
    plain = run(tiny, execution=execution, recurrence=1)
    m = tiny.model_gi.clone()
    m.model_options["multigpu_clones"] = {_torch.device("cpu"): _UnusableClone(), "other": _UnusableClone()}
    with caplog.at_level("WARNING"):
        split = run(tiny, model=m, execution=execution, recurrence=1)
    assert (split - plain).abs().max().item() == 0.0
    assert any("MultiGPU CFG Split is ignored" in r.getMessage() for r in caplog.records)
