"""Host: the ViBiD modes (vibid, vibid_gi) on tiny random SVD models in real ComfyUI."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.host

STEPS = 2


def run(tiny, model=None, mode="vibid_gi", **kw):
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings
    lat = tiny.conds[4]
    args = dict(seed=3, steps=STEPS, cfg=1.5, mode=mode, execution="batched")
    args.update(kw)
    default = tiny.model_gi if mode == "vibid_gi" else tiny.model
    return sample_inbetween("test", model or default, tiny.keyframe_conds, lat,
                            GenerationSettings(**args))["samples"]


def counted(model, frames=5):
    """A clone of `model` whose UNet calls are counted (videos per call in counter.per_call)."""
    from svd_inbetween.bench.measure import UnetCounter
    counter = UnetCounter(frames)
    m = model.clone()
    m.set_model_unet_function_wrapper(counter)
    return m, counter


def test_loop_matches_the_authors_flip_formulation_on_a_toy_denoiser():
    """sample_vibid works in forward time; the authors flip the latent for the backward half."""
    from test_vibid import authors_dds

    from svd_inbetween.samplers.schedule import recurrence_generator
    from svd_inbetween.samplers.protocol import ANSWERS_MARK, BACKWARD, DIRECTION_KEY
    from svd_inbetween.samplers.vibid import sample_vibid

    frames, cfg = 5, 1.7
    g = torch.Generator().manual_seed(4)
    bias = {k: torch.randn(frames, 2, 3, 3, generator=g) for k in ("start_c", "start_u", "end_c", "end_u")}
    start_lat, end_lat = torch.randn(1, 2, 3, 3, generator=g), torch.randn(1, 2, 3, 3, generator=g)

    def toy(x, which):  # an x0 predictor that is not time-symmetric
        return 0.6 * x + bias[which + "_u"], 0.5 * x + bias[which + "_c"]

    class Guider:
        pass
    setattr(Guider, ANSWERS_MARK, True)

    class Model:
        inner_model = Guider()

        def __call__(self, x, sigma, model_options, seed=None, denoise_mask=None):
            req = model_options[DIRECTION_KEY]
            flip = (lambda t: t.flip(0)) if req.direction == BACKWARD else (lambda t: t)
            u, c = toy(flip(x), "end" if req.direction == BACKWARD else "start")
            req.uncond = flip(u)
            req.pins = {0: start_lat} if req.direction == BACKWARD else {frames - 1: end_lat}
            return flip(u + cfg * (c - u))

    sigmas = torch.tensor([5.0, 2.0, 0.5, 0.0])
    x_init = torch.randn(frames, 2, 3, 3, generator=g)
    for cfg_pp in (True, False):
        ours = sample_vibid(Model(), x_init, sigmas, extra_args={"seed": 9, "model_options": {}}, disable=True,
                            cfg_pp=cfg_pp, dds=True)
        noise = recurrence_generator(9)
        x = x_init
        for i in range(3):
            s, n = sigmas[i], sigmas[i + 1]
            for half, key, pin in ((0, "start", end_lat), (1, "end", start_lat)):
                if half:
                    x = x + torch.randn(x.shape, generator=noise) * (s ** 2 - n ** 2).sqrt()
                    x = x.flip(0)
                u, c = toy(x, key)
                x0 = u + cfg * (c - u)
                x = authors_dds(x0, pin[0], -1) + (x - (u if cfg_pp else x0)) / s * n
                if half:
                    x = x.flip(0)
        assert (ours - x).abs().max().item() < 1e-4, cfg_pp


def one_call_sampler(direction, answers):
    """A SAMPLER that makes one one-direction call at sigma_0 and returns its x0 (uncond kept in `answers`)."""
    import comfy.samplers

    from svd_inbetween.samplers.protocol import DIRECTION_KEY, SAMPLER_MARK, DirectionRequest

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        req = DirectionRequest(direction)
        opts = {**extra_args["model_options"], DIRECTION_KEY: req, "disable_cfg1_optimization": True}
        out = model(x, sigmas[0] * x.new_ones(x.shape[0]), **dict(extra_args, model_options=opts))
        answers.append(req)
        return out
    setattr(fn, SAMPLER_MARK, "vibid")
    return comfy.samplers.KSAMPLER(fn)


def stock_sampler(flip, answers):
    import comfy.model_patcher
    import comfy.samplers

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        def keep(args):
            answers.append(args["uncond_denoised"])
            return args["denoised"]
        opts = comfy.model_patcher.set_model_options_post_cfg_function(dict(extra_args["model_options"]), keep, True)
        f = (lambda t: t.flip(0)) if flip else (lambda t: t)
        out = f(model(f(x), sigmas[0] * x.new_ones(x.shape[0]), **dict(extra_args, model_options=opts)))
        answers[-1] = f(answers[-1])
        return out
    return comfy.samplers.KSAMPLER(fn)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@torch.no_grad()
def test_one_direction_call_is_stock_svd_on_that_direction(tiny, direction):
    """vibid's halves: forward = stock CFG with the start conds; backward = stock CFG with the end conds
    on the time-flipped latent, flipped back. Also the unconditional x0 and the pinned keyframe."""
    import comfy.sample
    import comfy.samplers

    from svd_inbetween.samplers.run import make_guider
    from svd_inbetween.samplers.settings import GenerationSettings
    ps, ns, pe, ne, lat = tiny.conds
    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "karras", 4)[2:]
    noise = comfy.sample.prepare_noise(lat["samples"], 5)
    ours_ans, stock_ans = [], []
    guider = make_guider("test", tiny.model, tiny.keyframe_conds,
                         GenerationSettings(cfg=2.5, mode="vibid", forward_weight=0.5, execution="batched"))
    ours = guider.sample(noise, lat["samples"], one_call_sampler(direction, ours_ans), sigmas, seed=5)
    stock = comfy.samplers.CFGGuider(tiny.model)
    stock.set_conds(*((ps, ns) if direction == "forward" else (pe, ne)))
    stock.set_cfg(2.5)
    ref = stock.sample(noise, lat["samples"], stock_sampler(direction == "backward", stock_ans), sigmas, seed=5)
    # same maths; the UNet batch holds cond and uncond in the other order
    assert (ours - ref).abs().max().item() < 1e-4
    assert (ours_ans[0].uncond - stock_ans[0]).abs().max().item() < 1e-4
    (frame, pin), = ours_ans[0].pins.items()
    keyframe = (pe if direction == "forward" else ps)[0][1]["concat_latent_image"]
    assert frame == (4 if direction == "forward" else 0)
    assert torch.equal(pin, tiny.model.model.process_latent_in(keyframe))


@pytest.mark.parametrize("mode", ["vibid", "vibid_gi"])
def test_batched_equals_sequential_and_unet_calls(tiny, mode):
    base = tiny.model_gi if mode == "vibid_gi" else tiny.model
    mb, cb = counted(base)
    ms, cs = counted(base)
    b = run(tiny, mb, mode=mode, execution="batched")
    s = run(tiny, ms, mode=mode, execution="sequential")
    diff = (b - s).abs().max().item()
    print(f"{mode}: batched vs sequential max abs diff {diff:.3g}; calls {cb.per_call} / {cs.per_call}")
    assert diff <= 1e-4
    if mode == "vibid":  # forward call, backward call; uncond+cond in each (CFG++ needs the uncond)
        assert cb.per_call == cs.per_call == [2, 2] * STEPS
    else:  # the backward call also runs the forward chunks on the same latent for their maps
        assert cb.per_call == [2, 4] * STEPS
        assert cs.per_call == [2, 2, 2] * STEPS


def test_seeded_and_modes_differ(tiny):
    a, b, c = run(tiny, seed=11), run(tiny, seed=11), run(tiny, seed=12)
    assert torch.equal(a, b)
    assert (a - c).abs().max().item() > 1e-2
    plain = run(tiny, tiny.model_gi, mode="vibid", seed=11)
    assert (a - plain).abs().max().item() > 1e-4  # vibid_gi really uses the backward-motion model
    assert (run(tiny, tiny.model_gi, mode="vibid", seed=11, dds=False) - plain).abs().max().item() > 1e-4
    # the tiny model's cond and uncond predictions are close, so CFG++ moves the result only a little;
    # without an effect the two runs would be bit-identical
    assert (run(tiny, tiny.model_gi, mode="vibid", seed=11, cfg_pp=False) - plain).abs().max().item() > 1e-6


def test_custom_advanced_equals_all_in_one_and_stock_model_untouched(tiny):
    from fixtures_host import sample_custom_advanced, stock_ksampler
    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenSampler, SVDInbetweenViBiDSampler
    ps, ns, pe, ne, lat = tiny.conds

    def ksampler():
        return stock_ksampler(tiny.model, tiny.conds, 3, STEPS)
    ref = ksampler()
    guider = SVDInbetweenGuider.execute(tiny.model_gi, ps, ns, pe, ne, 1.5, "vibid_gi", 0.5, "batched").args[0]
    sampler = SVDInbetweenViBiDSampler.execute(True, True).args[0]
    custom = sample_custom_advanced(tiny.model, guider, sampler, lat, seed=3, steps=STEPS)
    node = SVDInbetweenSampler.execute(tiny.model_gi, ps, ns, pe, ne, lat, 3, STEPS, 1.5, "vibid_gi", 5, 0.5, 0.5,
                                       "batched")[0]["samples"]
    assert torch.equal(custom, node)
    assert torch.equal(node, run(tiny))
    assert torch.equal(ksampler(), ref)


def test_mismatched_building_blocks_and_missing_weights_are_refused_before_sampling(tiny):
    import comfy.sample
    import comfy.samplers

    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenRecurrentEuler, SVDInbetweenViBiDSampler
    from svd_inbetween.samplers.validation import InbetweenInputError
    ps, ns, pe, ne, lat = tiny.conds
    m, counter = counted(tiny.model)
    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "karras", STEPS)
    noise = comfy.sample.prepare_noise(lat["samples"], 0)

    guider = SVDInbetweenGuider.execute(m, ps, ns, pe, ne, 1.0, "vibid", 0.5, "batched").args[0]
    euler = SVDInbetweenRecurrentEuler.execute(0, 0.5).args[0]
    with pytest.raises(InbetweenInputError, match="SVDInbetweenGuider: input 'mode'.*SVDInbetweenViBiDSampler"):
        guider.sample(noise, lat["samples"], euler, sigmas)
    stock = comfy.samplers.CFGGuider(m)
    stock.set_conds(ps, ns)
    with pytest.raises(InbetweenInputError, match="SVDInbetweenViBiDSampler: input 'sampler'.*SVD Inbetween Guider"):
        stock.sample(noise, lat["samples"], SVDInbetweenViBiDSampler.execute().args[0], sigmas)
    assert counter.per_call == []
    with pytest.raises(InbetweenInputError, match="SVDInbetweenGuider: input 'model'.*vibid_gi.*"
                                                  "SVDInbetweenLoadBackwardWeights"):
        SVDInbetweenGuider.execute(tiny.model, ps, ns, pe, ne, 1.0, "vibid_gi", 0.5, "batched")
    with pytest.raises(InbetweenInputError, match="test: input 'model'.*vibid_gi"):
        run(tiny, tiny.model, mode="vibid_gi")
    from fixtures_host import conditioning
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings, KeyframeConds
    other = conditioning(tiny.clip_vision, tiny.vae, size=72)
    with pytest.raises(InbetweenInputError, match="test: input 'positive_end'.*72x72.*64x64"):
        sample_inbetween("test", tiny.model, KeyframeConds(ps, ns, other[2], other[3]), lat,
                         GenerationSettings(seed=0, steps=STEPS, cfg=1.0, mode="vibid"))
    assert counter.per_call == []
