"""Host: the lowvram execution equals sequential, leaves stock sampling alone, and auto picks by memory."""
from __future__ import annotations

import logging

import pytest
import torch

pytestmark = pytest.mark.host

BUDGET_ENV = "SVD_INBETWEEN_MEMORY_BUDGET_MB"


def run(tiny, model=None, **kw):
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    lat = tiny.conds[4]
    args = dict(seed=3, steps=4, cfg=2.0, mode="gi", recurrence=5, recurrence_ratio=0.5, forward_weight=0.5,
                execution="sequential")
    args.update(kw)
    return sample_inbetween("test", model or tiny.model_gi, tiny.keyframe_conds, lat, GenerationSettings(**args),
                            callback=lambda *a: None)["samples"]


class Pieces:
    """Counts the pieces each kind of chunked layer ran (spy on chunking.over_rows)."""

    def __init__(self, monkeypatch):
        from svd_inbetween.attention_patch import chunking
        self.calls: list[tuple[int, int]] = []
        real = chunking.over_rows

        def spy(fn, rows, *inputs):
            self.calls.append((rows, inputs[0].shape[0]))
            return real(fn, rows, *inputs)
        for module in ("chunking", "feedforward"):
            monkeypatch.setattr(f"svd_inbetween.attention_patch.{module}.over_rows", spy)


class UnetCalls:
    def __init__(self):
        self.videos: list[list[int]] = []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, apply_model, args):
        self.videos.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])


def predictions(model, conds, latent, execution: str, mode: str = "gi", sigmas=(700.0, 100.0)) -> torch.Tensor:
    """The guider's fused x0 at fixed noisy latents x = sigma * noise, one fused evaluation per sigma:
    what one step of `execution` outputs, before the sampler's fp32 update amplifies rounding.
    (Random weights make x0 grow towards small sigmas, to ~1000 at 0.5, where fp32 spacing alone is
    6e-5; at these sigmas it stays within about 30, so 1e-5 is ~100 fp32 steps of it.)"""
    import comfy.samplers
    from svd_inbetween.samplers.run import make_guider
    from svd_inbetween.samplers.settings import GenerationSettings, KeyframeConds
    got = []

    def probe(model_k, x, sigmas_, extra_args=None, callback=None, disable=None):
        for s in sigmas_[:-1]:
            got.append(model_k(x * s, s * x.new_ones([x.shape[0]]), **(extra_args or {})))
        return x
    guider = make_guider("test", model, KeyframeConds(*conds),
                         GenerationSettings(cfg=2.0, mode=mode, forward_weight=0.5, execution=execution))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))
    guider.sample(noise, latent, comfy.samplers.KSAMPLER(probe), torch.tensor([*sigmas, 0.0]), disable_pbar=True,
                  seed=0)
    return torch.stack(got)


@pytest.mark.parametrize("mode", ["gi", "gi_no_finetune", "trf"])
def test_lowvram_equals_sequential_with_every_layer_in_pieces(tiny, mode, monkeypatch):
    """Pieces of 2 KiB: every feed-forward, spatial res-block layer and rotating attention runs in pieces.
    One fused evaluation agrees to 1e-5 (fp32 summation order); whole sampling to the 1e-4 that batched vs
    sequential also shows (the sampler's fp32 update at sigma 700 turns any reordering into ulp(700))."""
    from svd_inbetween.attention_patch import chunking
    ps, ns, pe, ne, lat = tiny.conds
    sequential = run(tiny, mode=mode)
    seq_pred = predictions(tiny.model_gi, (ps, ns, pe, ne), lat["samples"], "sequential", mode)
    monkeypatch.setattr(chunking, "PIECE_BYTES", 2048)
    low_pred = predictions(tiny.model_gi, (ps, ns, pe, ne), lat["samples"], "lowvram", mode)
    pieces = Pieces(monkeypatch)
    counter = UnetCalls()
    m = tiny.model_gi.clone()
    m.set_model_unet_function_wrapper(counter)
    low = run(tiny, model=m, mode=mode, execution="lowvram")
    step_diff = (low_pred - seq_pred).abs().max().item()
    diff = (low - sequential).abs().max().item()
    print(f"{mode}: lowvram vs sequential max abs diff: one evaluation {step_diff:.3g}, sampled latent {diff:.3g}")
    assert step_diff <= 1e-5 and seq_pred.abs().max() > 1e-1
    assert diff <= 1e-4 and sequential.abs().max() > 1e-2
    # one video per UNet call, forward before its backward partner: 4 calls per fused evaluation
    fused = 4 + 5 * 2
    assert counter.videos == [[3], [1], [2], [0]] * fused
    # each call ran 44 res-block Sequentials and 46 of the 48 feed-forwards in pieces (the middle block's
    # temporal ones see one position per video), and the rotating attention of 15 layers (not the middle)
    assert len(pieces.calls) >= 4 * fused * (46 + 44)
    assert all(rows < total for rows, total in pieces.calls)


def test_lowvram_reaches_the_temporal_attention_pieces(tiny, monkeypatch):
    """The rotating proxies' own attention (forward maps and rotated backward) runs in row pieces."""
    from svd_inbetween.attention_patch import chunking, proxy
    monkeypatch.setattr(chunking, "PIECE_BYTES", 2048)
    seen = []
    real = proxy.in_pieces

    def spy(fn, *inputs):
        seen.append(chunking.piece_rows(*inputs))
        return real(fn, *inputs)
    monkeypatch.setattr(proxy, "in_pieces", spy)
    run(tiny, steps=1, recurrence=0, execution="lowvram")
    # per fused evaluation: 16 layers x (2 forward calls x 2 in_pieces + 2 backward calls x 1); all but the
    # middle block's (one position per video at 1/8 of the 8x8 latent) in pieces
    assert len(seen) == 16 * 6 and sum(r is not None for r in seen) == 15 * 6
    seen.clear()
    run(tiny, steps=1, recurrence=0, execution="sequential")
    assert len(seen) == 16 * 6 and all(r is None for r in seen)


def test_stock_sampling_unchanged_by_the_lowvram_patches(tiny, monkeypatch):
    """KSampler through the patched clone == through the stock model, bit for bit, also after lowvram runs."""
    from fixtures_host import stock_ksampler
    from svd_inbetween.attention_patch import chunking
    monkeypatch.setattr(chunking, "PIECE_BYTES", 2048)
    ps, ns, _, _, lat = tiny.conds

    def ksampler(model):
        return stock_ksampler(model, tiny.conds, 5, 3)
    stock = ksampler(tiny.model)
    patched = ksampler(tiny.model_gi)
    run(tiny, steps=1, recurrence=0, execution="lowvram")
    assert torch.equal(patched, stock)
    assert torch.equal(ksampler(tiny.model_gi), stock)
    assert torch.equal(ksampler(tiny.model), stock)


def test_frame_chunked_layers_keep_keys_and_stay_whole_outside(tiny, monkeypatch):
    from svd_inbetween.attention_patch import chunking
    from svd_inbetween.attention_patch.chunking import FrameChunked, low_memory, spatial_resblock_layer_paths
    from svd_inbetween.attention_patch.layers import PREFIX
    unet = tiny.model.model.diffusion_model
    paths = spatial_resblock_layer_paths(unet)
    # SVD-XT's structure: 8 input, 2 middle and 12 output res-blocks, each with in_layers and out_layers
    assert len(paths) == 2 * (8 + 2 + 12) and not any("time_stack" in p for p in paths)
    assert all(chunking.is_chunked_wrapper(tiny.model_gi.object_patches[PREFIX + p]) for p in paths)
    seq = unet.get_submodule(paths[0])
    wrapper = FrameChunked(seq)
    assert list(wrapper.state_dict()) == list(seq.state_dict())
    x = torch.randn(6, seq[0].num_channels, 8, 8)
    with torch.no_grad():
        whole = wrapper(x)
        with low_memory(x[0].numel() * x.element_size() * 2):
            pieces = wrapper(x)
    assert torch.equal(whole, seq(x))
    assert (pieces - whole).abs().max().item() <= 1e-6


def _needed(tiny, execution):
    """needed_bytes of `execution` for the tiny model's latent, as the guider computes it."""
    from svd_inbetween.attention_patch.layers import temporal_attn1_paths
    from svd_inbetween.attention_patch.modes import rotate_layers
    from svd_inbetween.samplers.execution import execution_estimates, needed_bytes
    x = tiny.conds[4]["samples"]
    est = execution_estimates(tiny.model_gi, tiny.model_gi.model, x,
                              rotate_layers(temporal_attn1_paths(tiny.model_gi), "gi"))
    return needed_bytes(est[execution])


def test_auto_picks_the_fastest_that_fits_and_logs_why(tiny, monkeypatch, caplog):
    import comfy.model_management
    from svd_inbetween.samplers.recurrent_euler import recurrent_euler_sampler
    from svd_inbetween.samplers.run import make_guider, run_guider
    from svd_inbetween.samplers.settings import GenerationSettings
    need = {e: _needed(tiny, e) for e in ("batched", "sequential", "lowvram")}
    assert need["batched"] > need["sequential"] > need["lowvram"]
    lat = tiny.conds[4]
    outs = {}
    kib = 1024
    for expected, budget in (("batched", None), ("batched", need["batched"] + kib),
                             ("sequential", need["batched"] - kib), ("sequential", need["sequential"] + kib),
                             ("lowvram", need["sequential"] - kib), ("lowvram", 0)):
        if budget is None:
            monkeypatch.delenv(BUDGET_ENV, raising=False)
        else:
            monkeypatch.setenv(BUDGET_ENV, f"{budget / 2**20:.6f}")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="svd_inbetween.samplers.execution"):
            settings = GenerationSettings(seed=3, steps=3, cfg=2.0, mode="gi", forward_weight=0.5, execution="auto",
                                          recurrence=1, recurrence_ratio=0.5)
            guider = make_guider("test", tiny.model_gi, tiny.keyframe_conds, settings)
            # 3 steps: with fewer, one step goes from sigma 700 to ~0 and fp32 leaves ulp(700) of resolution
            out = run_guider(guider, lat, settings, recurrent_euler_sampler(1, 0.5), callback=lambda *a: None)["samples"]
        assert guider.chosen_execution == expected, (budget, need)
        records = [r for r in caplog.records if "auto execution" in r.getMessage()]
        assert len(records) == 1 and f"runs {expected} " in records[0].getMessage(), records
        line = records[0].getMessage()
        if budget is not None:
            assert BUDGET_ENV in line or budget >= comfy.model_management.get_free_memory(), line
        assert records[0].levelno == (logging.WARNING if budget == 0 else logging.INFO)
        outs.setdefault(expected, out)
    assert (outs["batched"] - outs["sequential"]).abs().max().item() <= 1e-4
    assert (outs["lowvram"] - outs["sequential"]).abs().max().item() <= 1e-4


def test_choose_execution_order_budget_and_errors(monkeypatch):
    from svd_inbetween.samplers.execution import MemoryBudgetError, choose_execution, needed_bytes
    mib = 2**20
    est = {"batched": 900 * mib, "sequential": 600 * mib, "lowvram": 200 * mib}
    need = {e: needed_bytes(v) for e, v in est.items()}
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert choose_execution("auto", need["batched"], est) == "batched"
    assert choose_execution("auto", need["batched"] - 1, est) == "sequential"
    assert choose_execution("auto", need["lowvram"], est) == "lowvram"
    assert choose_execution("auto", 1, est) == "lowvram"
    for explicit in ("batched", "sequential", "lowvram"):
        assert choose_execution(explicit, 1, est) == explicit
    monkeypatch.setenv(BUDGET_ENV, str(need["sequential"] / mib))
    assert choose_execution("auto", 64 * 2**30, est) == "sequential"
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(MemoryBudgetError, match=f"{BUDGET_ENV}='lots'"):
        choose_execution("auto", 64 * 2**30, est)


def test_streamed_weights_count_only_when_partially_offloaded(tiny):
    from svd_inbetween.samplers.execution import STREAMED_LAYERS, streamed_weight_bytes

    class Partial:
        def __init__(self, loaded):
            self.model, self._loaded = tiny.model.model, loaded

        def model_size(self):
            return 1000

        def loaded_size(self):
            return self._loaded
    largest = max(p.numel() * p.element_size() for p in tiny.model.model.diffusion_model.parameters())
    assert streamed_weight_bytes(Partial(1000)) == 0
    assert streamed_weight_bytes(Partial(400)) == STREAMED_LAYERS * largest


def test_comfyui_keeps_the_layout_auto_chose_and_stock_batching_is_unchanged(tiny, monkeypatch):
    """With free memory where ComfyUI's generic estimate would split a 4-video call but the pack's fits,
    auto runs batched as one call per evaluation; stock KSampler batching through the same clone is as
    through the stock model (it follows ComfyUI's estimate)."""
    import comfy.model_management
    from fixtures_host import stock_ksampler
    from svd_inbetween.samplers import execution
    monkeypatch.setattr(execution, "HEADROOM_BYTES", 0)
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    lat = tiny.conds[4]["samples"]
    frames = lat.shape[0]
    generic = {v: tiny.model.model.memory_required([v * frames, *lat.shape[1:]]) * 1.5 for v in (1, 2, 4)}
    needed = _needed(tiny, "batched")
    free = max(needed, generic[1]) * 1.01
    assert free < generic[2] < generic[4], (needed, generic)  # ComfyUI alone would run one video per call
    monkeypatch.setattr(comfy.model_management, "get_free_memory",
                        lambda dev=None, torch_free_too=False: (free, free) if torch_free_too else free)

    counter = UnetCalls()
    m = tiny.model_gi.clone()
    m.set_model_unet_function_wrapper(counter)
    run(tiny, model=m, steps=1, recurrence=0, execution="auto")
    assert counter.videos == [[3, 2, 1, 0]]

    def stock_calls(model):
        c = UnetCalls()
        mm = model.clone()
        mm.set_model_unet_function_wrapper(c)
        stock_ksampler(mm, tiny.conds, 5, 1)
        return c.videos
    stock = stock_calls(tiny.model)
    assert stock_calls(tiny.model_gi) == stock and sorted(stock) == [[0], [1]]  # cond and uncond split


@pytest.mark.bigmem
def test_lowvram_equals_sequential_on_the_full_architecture(monkeypatch):
    """SVD-XT's real architecture (1.5 B random fp32 parameters, ~8.5 GiB peak RSS, ~40 s on one core) at
    64x64x3: one fused evaluation of lowvram, every layer in pieces, against sequential. On this random
    network any change of call layout moves x0 by ~4e-6 of its size in fp32 (measured, 2 threads: lowvram
    3.05e-5, batched 3.6e-5 at |x0| 7.9), so the bound is relative to |x0|. (Stored bf16 and run in fp32 through
    ComfyUI's manual cast, the process grew past 22 GiB on CPU; plain fp32 weights stay near 8.5 GiB.)"""
    import gc

    from svd_inbetween.attention_patch import chunking
    from svd_inbetween.attention_patch.layers import with_proxies
    from svd_inbetween.bench.check import fix_mmap_threshold
    from svd_inbetween.bench.models import random_backward_weights, random_conds, svd_patcher
    fix_mmap_threshold()  # else glibc keeps each freed multi-MiB block and RSS climbs past 9.5 GiB
    model = svd_patcher("full", torch.float32)
    try:
        model_gi = with_proxies(model, random_backward_weights(model))
        ps, ns, pe, ne, lat = random_conds("full", 64, 64, 3)
        sequential = predictions(model_gi, (ps, ns, pe, ne), lat["samples"], "sequential", sigmas=(700.0,))
        monkeypatch.setattr(chunking, "PIECE_BYTES", 4096)
        low = predictions(model_gi, (ps, ns, pe, ne), lat["samples"], "lowvram", sigmas=(700.0,))
        diff, size = (low - sequential).abs().max().item(), sequential.abs().max().item()
        print(f"full architecture: lowvram vs sequential max abs diff {diff:.3g} at |x0| up to {size:.3g}")
        assert diff <= 1e-5 * size and size > 1e-1
    finally:
        del model
        gc.collect()
