"""Host: the proxy on ComfyUI's real temporal CrossAttention."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.host


def real_layer(tiny):
    from svd_inbetween.attention_patch.layers import original_module, temporal_attn1_paths
    path = temporal_attn1_paths(tiny.model)[0]
    return path, original_module(tiny.model, path)


def test_rotated_backward_on_flipped_input_equals_flipped_forward(tiny):
    """W' = W: proxy(backward chunk = flip(x), rot180(A(x))) == flip(attention(x)) along time."""
    from svd_inbetween.attention_patch.proxy import TemporalAttentionProxy
    from svd_inbetween.attention_patch.run_state import BACKWARD_COND, FORWARD_COND, RUN_KEY, InbetweenRun
    path, attn = real_layer(tiny)
    proxy = TemporalAttentionProxy(attn, path, attn.to_v.weight.detach().clone(), attn.to_out[0].weight.detach().clone())
    torch.manual_seed(0)
    frames = 5
    x = torch.randn(12, frames, attn.to_q.in_features)
    run = InbetweenRun(rotate_layers=frozenset([path]), finetuned=True,
                       active=frozenset([BACKWARD_COND, FORWARD_COND]))
    opts = {RUN_KEY: run, "cond_or_uncond": [BACKWARD_COND, FORWARD_COND]}
    with torch.no_grad():
        out = proxy(torch.cat([x.flip(1), x]), transformer_options=opts)
        stock = attn(x)
    backward, forward = out.chunk(2)
    assert torch.allclose(forward, stock, atol=1e-5)
    assert torch.allclose(backward, stock.flip(1), atol=1e-5)
    assert run.maps == {}


def test_sequential_hand_over_equals_batched(tiny):
    from svd_inbetween.attention_patch.proxy import TemporalAttentionProxy
    from svd_inbetween.attention_patch.run_state import BACKWARD_COND, FORWARD_COND, RUN_KEY, InbetweenRun
    path, attn = real_layer(tiny)
    g = torch.Generator().manual_seed(1)
    wv = attn.to_v.weight.detach() + 0.01 * torch.randn(attn.to_v.weight.shape, generator=g)
    wo = attn.to_out[0].weight.detach() + 0.01 * torch.randn(attn.to_out[0].weight.shape, generator=g)
    proxy = TemporalAttentionProxy(attn, path, wv, wo)
    xf, xb = torch.randn(8, 5, attn.to_q.in_features), torch.randn(8, 5, attn.to_q.in_features)
    active = frozenset([BACKWARD_COND, FORWARD_COND])

    def call(x, ids, run):
        with torch.no_grad():
            return proxy(x, transformer_options={RUN_KEY: run, "cond_or_uncond": ids})
    run = InbetweenRun(rotate_layers=frozenset([path]), finetuned=True, active=active)
    batched_b, batched_f = call(torch.cat([xb, xf]), [BACKWARD_COND, FORWARD_COND], run).chunk(2)
    seq_f = call(xf, [FORWARD_COND], run)
    assert len(run.maps) == 1 and run.peak_map_bytes > 0
    seq_b = call(xb, [BACKWARD_COND], run)
    assert run.maps == {}
    assert torch.allclose(batched_f, seq_f, atol=1e-6) and torch.allclose(batched_b, seq_b, atol=1e-6)
    # the fine-tuned projections are used: plain W gives something else
    run2 = InbetweenRun(rotate_layers=frozenset([path]), finetuned=False, active=active)
    plain_b, _ = call(torch.cat([xb, xf]), [BACKWARD_COND, FORWARD_COND], run2).chunk(2)
    assert (plain_b - batched_b).abs().max() > 1e-4


def test_backward_chunks_never_compute_query_or_key(tiny):
    """Count rows through to_q/to_k in a gi run: only forward chunks (half the batch) ever reach them."""
    from svd_inbetween.attention_patch.layers import original_module, temporal_attn1_paths
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    rows = {"q": [], "v": []}
    hooks = []
    for path in temporal_attn1_paths(tiny.model):
        mod = original_module(tiny.model, path)
        hooks.append(mod.to_q.register_forward_hook(lambda m, i, o: rows["q"].append(i[0].shape[0])))
        hooks.append(mod.to_v.register_forward_hook(lambda m, i, o: rows["v"].append(i[0].shape[0])))
    try:
        lat = tiny.conds[4]
        settings = GenerationSettings(seed=0, steps=1, cfg=2.0, mode="gi", recurrence=0, execution="batched")
        sample_inbetween("test", tiny.model_gi, tiny.keyframe_conds, lat, settings, callback=lambda *a: None)
    finally:
        for h in hooks:
            h.remove()
    # One batched UNet call holds 4 chunks (forward/backward x cond/uncond). Per layer, only the two forward
    # chunks go through to_q (and the stock to_v); the backward chunks use rot180 maps and W_v'.
    assert len(rows["q"]) == len(rows["v"]) == 2 * 16
    assert rows["q"] == rows["v"]
    positions = lat["samples"].shape[-1] * lat["samples"].shape[-2]
    assert max(rows["q"]) == positions  # one chunk of one video, never the 4-chunk batch


def _feedforward_rows(tiny):
    """Hooks on every feed-forward's `net` of the tiny model recording the rows of each call."""
    from svd_inbetween.attention_patch.feedforward import feedforward_paths
    from svd_inbetween.attention_patch.layers import PREFIX
    rows: list[int] = []
    hooks = []
    for path in feedforward_paths(tiny.model.model.diffusion_model):
        net = tiny.model_gi.get_model_object(PREFIX + path).net
        hooks.append(net.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0])))
    return rows, hooks


def test_feedforward_wrapper_keeps_keys_and_values(tiny, monkeypatch):
    """Same state-dict keys as stock; outside a dual call it is the stock net; split it agrees to fp32 ulps;
    inputs under SPLIT_MIN_BYTES stay whole."""
    from svd_inbetween.attention_patch import feedforward
    from svd_inbetween.attention_patch.feedforward import (PerVideoFeedForward, feedforward_paths,
                                                           per_video_feedforward)
    from svd_inbetween.attention_patch.layers import PREFIX
    unet = tiny.model.model.diffusion_model
    paths = feedforward_paths(unet)
    # SVD blocks: each spatial transformer block has ff; each temporal block ff_in and ff.
    assert len(paths) == 16 * 3
    assert all(tiny.model_gi.object_patches[PREFIX + p].is_svd_inbetween_feedforward for p in paths)
    original = unet.get_submodule(paths[0])
    wrapper = PerVideoFeedForward(original)
    assert [k for k, _ in wrapper.state_dict().items()] == [k for k, _ in original.state_dict().items()]
    x = torch.randn(12, 7, original.net[0].proj.in_features if hasattr(original.net[0], "proj")
                    else original.net[0][0].in_features)
    calls = []
    hook = wrapper.net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        with per_video_feedforward(4):
            small = wrapper(x)  # default threshold: this input is far below it
        monkeypatch.setattr(feedforward, "SPLIT_MIN_BYTES", x.numel() * x.element_size())
        plain = wrapper(x)
        with per_video_feedforward(4):
            split = wrapper(x)
        after = wrapper(x)
    hook.remove()
    assert calls == [12, 12, 3, 3, 3, 3, 12]
    assert torch.equal(small, plain)
    assert torch.equal(plain, original(x)) and torch.equal(after, plain)
    assert torch.allclose(split, plain, atol=1e-6, rtol=0)


def test_dual_calls_run_feedforwards_one_video_at_a_time(tiny, monkeypatch):
    """In batched (4 chunks) and sequential (2 chunks) calls, no feed-forward sees more than one video
    (split threshold lowered to 0: the tiny model's activations are all below the default)."""
    from svd_inbetween.attention_patch import feedforward
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    monkeypatch.setattr(feedforward, "SPLIT_MIN_BYTES", 0)
    lat = tiny.conds[4]
    frames, h, w = lat["samples"].shape[0], lat["samples"].shape[-2], lat["samples"].shape[-1]
    # rows of one video: frames (spatial blocks, (b t) s c) or latent positions at some resolution
    # (temporal blocks, (b s) t c)
    one_video = {frames} | {-(-h // f) * -(-w // f) for f in (1, 2, 4, 8)}
    for execution in ("batched", "sequential"):
        rows, hooks = _feedforward_rows(tiny)
        try:
            settings = GenerationSettings(seed=0, steps=1, cfg=2.0, mode="gi", recurrence=0, execution=execution)
            sample_inbetween("test", tiny.model_gi, tiny.keyframe_conds, lat, settings, callback=lambda *a: None)
        finally:
            for hk in hooks:
                hk.remove()
        assert len(rows) == 48 * 4, execution  # every feed-forward, once per video
        assert set(rows) <= one_video, (execution, sorted(set(rows)))


def test_stock_sampling_through_wrapped_model_keeps_whole_batches(tiny, monkeypatch):
    """Outside the guider's dual calls (stock KSampler on the patched clone) the batch is not split."""
    import comfy.sample
    from svd_inbetween.attention_patch import feedforward
    monkeypatch.setattr(feedforward, "SPLIT_MIN_BYTES", 0)
    import comfy.samplers
    ps, ns, _, _, lat = tiny.conds
    rows, hooks = _feedforward_rows(tiny)
    try:
        noise = comfy.sample.prepare_noise(lat["samples"], 0)
        comfy.sample.sample(tiny.model_gi, noise, 1, 2.0, "euler", "karras", ps, ns, lat["samples"],
                            disable_pbar=True, seed=0)
    finally:
        for hk in hooks:
            hk.remove()
    frames = lat["samples"].shape[0]
    assert len(rows) == 48 and 2 * frames in rows  # cond + uncond in one call, one feed-forward call each


def test_split_feedforwards_give_the_same_video(tiny, monkeypatch):
    """gi, batched, 3 steps with recurrence: feed-forwards split per video == whole (float summation order only;
    with 2 steps one goes from sigma 700 to ~0 and the latent keeps only ulp(700) = 6e-5 of fp32 resolution)."""
    from svd_inbetween.attention_patch import feedforward
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    lat = tiny.conds[4]

    def run():
        settings = GenerationSettings(seed=3, steps=3, cfg=2.0, mode="gi", recurrence=1, execution="batched")
        return sample_inbetween("test", tiny.model_gi, tiny.keyframe_conds, lat, settings,
                                callback=lambda *a: None)["samples"]
    whole = run()
    monkeypatch.setattr(feedforward, "SPLIT_MIN_BYTES", 0)
    split = run()
    diff = (split - whole).abs().max().item()
    print(f"split vs whole feed-forwards: max abs diff {diff:.3g}")
    assert diff <= 1e-4
    # the splitting did happen: a wrong recombination (videos swapped) would not pass the check above
    assert whole.abs().max() > 1e-2
