"""Host: Motion Prior Distillation (mpd, mpd_trf, mpd_gi) against the authors' loops on tiny SVD models.

The references below are written from reading the authors' mpd_seq.py / mpd_par.py
(GitHub vvsjeon/MPDsampler), in their formulation: the backward path on the flipped latent,
DDS by conjugate gradients, their EDM sigmas and initial scaling, one randn per re-noise. Their
denoiser is stock SVD (ComfyUI's calc_cond_batch) with the start or the end conds.
"""
from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.host

STEPS = 6  # mpd distils steps 0-1 (i < 1.2), mpd_trf step 0 (i < 0.6): both boundaries inside the run
SEED = 7
AUG = 0.02  # the default augmentation: DDS and the distillation must use the clean keyframes


def authors_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0):
    """Their EDMDiscretization with the appended zero."""
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])


def authors_loop(schedule: str, denoise, x, sigmas, latent_start, latent_end, randn_like, steps: int,
                 fraction: float | None = None):
    """mpd_seq (schedule 'mpd') or mpd_par ('mpd_trf') as the authors wrote it, at their constants
    (`fraction` replaces their 0.2 / 0.1 to distil further down the schedule).

    denoise(x, sigma, which) -> (uncond x0, cond x0) of stock SVD, which = 'start' | 'end'."""
    from test_vibid import authors_dds

    def dds(x0, latent):
        return authors_dds(x0, latent[0], -1)

    def vibid_step(x_fwd, sigma, nxt):
        u, c = denoise(x_fwd, sigma, "start")
        x_fwd = dds(c, latent_end) + (x_fwd - u) / sigma * nxt
        x_fwd = x_fwd + randn_like(x_fwd) * (sigma ** 2 - nxt ** 2) ** 0.5
        x_bwd = x_fwd.flip(0)
        u, c = denoise(x_bwd, sigma, "end")
        return (dds(c, latent_start) + (x_bwd - u) / sigma * nxt).flip(0)

    theirs, iterations = (0.2, 3) if schedule == "mpd" else (0.1, 1)
    fraction = theirs if fraction is None else fraction
    x_fwd = x
    for i in range(steps):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        if i < fraction * steps:
            for _ in range(iterations):
                x_bwd = x_fwd.flip(0)
                u, c = denoise(x_fwd, sigma, "start")
                eps_fwd = (x_fwd - c) / sigma
                eps_end = (x_bwd[:1] - latent_end) / sigma
                target = -(eps_fwd[1:] - eps_fwd[:-1]).flip(0)
                eps_bwd = torch.empty_like(eps_fwd)
                eps_bwd[:1] = eps_end
                eps_bwd[1:] = eps_bwd[0] + torch.cumsum(target, dim=0)
                x0_bwd = x_bwd - sigma * eps_bwd
                d = (x_bwd - u.flip(0)) / sigma
                x_bwd = dds(x0_bwd, latent_start) + d * nxt
                x_fwd = x_bwd.flip(0)
                x_fwd = x_fwd + randn_like(x_fwd) * (sigma ** 2 - nxt ** 2) ** 0.5
            x_fwd = vibid_step(x_fwd, sigma, nxt)
        elif schedule == "mpd":
            x_fwd = vibid_step(x_fwd, sigma, nxt)
        else:
            w = torch.linspace(1.0, 0.0, steps=x_fwd.shape[0])[:, None, None, None]
            for r in range(4):
                u, c = denoise(x_fwd, sigma, "start")
                _, c_bwd = denoise(x_fwd.flip(0), sigma, "end")
                d = (x_fwd - u) / sigma
                x_fwd = (w * c + (1.0 - w) * c_bwd.flip(0)) + d * nxt
                if r < 3:
                    x_fwd = x_fwd + randn_like(x_fwd) * (sigma ** 2 - nxt ** 2) ** 0.5
    return x_fwd


def clean_latents(tiny):
    """encode(keyframe) without augmentation noise, in model space (their encode_first_stage)."""
    from fixtures_host import SIZE, keyframes
    from svd_inbetween.conditioning.keyframes import fit_image
    return [tiny.model.model.process_latent_in(tiny.vae.encode(fit_image(k, SIZE, SIZE, "crop")))
            for k in keyframes()]


def reference(tiny, conds, schedule: str, steps: int = STEPS, seed: int = SEED, draws: list | None = None,
              fraction: float | None = None):
    """The authors' loop run inside a stock CFGGuider holding all four conds (so ComfyUI processes them)."""
    import comfy.sample
    import comfy.samplers

    from fixtures_host import sample_custom_advanced
    from svd_inbetween.samplers.schedule import recurrence_generator
    ps, ns, pe, ne, lat = conds
    start, end = clean_latents(tiny)
    gen = recurrence_generator(seed)

    def loop(model, x, sigmas, extra_args=None, callback=None, disable=None):
        guider = model.inner_model
        theirs = authors_sigmas(steps)
        assert (sigmas - theirs).abs().max().item() <= 1e-5 * theirs.max().item()  # = ComfyUI's karras on SVD
        noise = comfy.sample.prepare_noise(lat["samples"], seed)
        assert (x - noise * math.sqrt(1.0 + float(theirs[0]) ** 2)).abs().max().item() < 1e-3

        def denoise(xt, sigma, which):
            pos, neg = ("positive", "negative") if which == "start" else ("positive_end", "negative_end")
            c, u = comfy.samplers.calc_cond_batch(guider.inner_model, [guider.conds[pos], guider.conds[neg]], xt,
                                                  sigma * xt.new_ones(xt.shape[0]), extra_args["model_options"])
            return u, c

        def randn_like(t):
            if draws is not None:
                draws.append(len(draws))
            return torch.randn(t.shape, generator=gen, dtype=t.dtype)
        return authors_loop(schedule, denoise, x, theirs.to(x), start, end, randn_like, steps, fraction)

    guider = comfy.samplers.CFGGuider(tiny.model)
    guider.inner_set_conds({"positive": ps, "negative": ns, "positive_end": pe, "negative_end": ne})
    guider.set_cfg(1.0)
    return sample_custom_advanced(tiny.model, guider, comfy.samplers.KSAMPLER(loop), lat, seed=seed, steps=steps)


@pytest.fixture(scope="module")
def aug_conds(tiny):
    from fixtures_host import conditioning
    return conditioning(tiny.clip_vision, tiny.vae, aug=AUG)


def ours(tiny, conds, mode: str, execution: str, model=None, sampler=None, steps: int = STEPS):
    """SVDInbetweenGuider (cfg 1) + SVDInbetweenMPDSampler (defaults) in the stock SamplerCustomAdvanced."""
    from fixtures_host import sample_custom_advanced
    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenMPDSampler
    ps, ns, pe, ne, lat = conds
    guider = SVDInbetweenGuider.execute(model or tiny.model, ps, ns, pe, ne, 1.0, mode, 0.5, execution).args[0]
    sampler = sampler or SVDInbetweenMPDSampler.execute().args[0]
    return sample_custom_advanced(tiny.model, guider, sampler, lat, seed=SEED, steps=steps)


# Observed: ~3e-6 of the latent's size (fp32). Tighter than the 1e-4 asked for, so that a change whose effect
# fades by the last step (e.g. the distillation, which acts at the highest sigmas) still shows.
TOLERANCE = 2e-5


@pytest.mark.parametrize("mode,schedule", [("mpd", "mpd"), ("mpd_trf", "mpd_trf")])
def test_mpd_equals_the_authors_loop(tiny, aug_conds, mode, schedule):
    ref = reference(tiny, aug_conds, schedule)
    scale = ref.abs().max().item()
    for execution in ("batched", "sequential"):
        diff = (ours(tiny, aug_conds, mode, execution) - ref).abs().max().item()
        print(f"{mode} {execution}: max abs diff {diff:.3g} (relative {diff / scale:.3g}) vs the authors' loop")
        assert diff <= TOLERANCE * scale, (mode, execution, diff, scale)


@pytest.mark.parametrize("mode,schedule,knob", [("mpd", "mpd", "mpd_distill_fraction"),
                                                ("mpd_trf", "mpd_trf", "mpd_trf_distill_fraction")])
def test_distillation_down_to_the_last_step_equals_the_authors_loop(tiny, aug_conds, mode, schedule, knob):
    """Their loop with the fraction set to 1: every step distils, so the distillation, its end anchor and the
    clean start pin act at low sigma too, where a mistake in them stays in the result."""
    from svd_inbetween.nodes.sampler import SVDInbetweenMPDSampler
    ref = reference(tiny, aug_conds, schedule, fraction=1.0)
    got = ours(tiny, aug_conds, mode, "batched", sampler=SVDInbetweenMPDSampler.execute(**{knob: 1.0}).args[0])
    diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    print(f"{mode}, fraction 1: max abs diff {diff:.3g} (relative {diff / scale:.3g}) vs the authors' loop")
    assert diff <= TOLERANCE * scale
    # the distillation matters at these settings: the ViBiD steps alone are far off
    plain = ours(tiny, aug_conds, mode, "batched", sampler=SVDInbetweenMPDSampler.execute(**{knob: 0.0}).args[0])
    assert (plain - ref).abs().max().item() > 100 * TOLERANCE * scale


def test_fused_requests_keep_the_backward_uncond_when_a_cfg_function_reads_it(tiny):
    """mpd_trf at cfg 1 skips the backward unconditional video, unless a CFG function (guidance linear) uses it."""
    from test_host_vibid import counted

    from svd_inbetween.nodes.sampler import SVDInbetweenSampler
    ps, ns, pe, ne, lat = tiny.conds
    for guidance, fused_videos in (("constant", 3), ("linear", 4)):
        m, counter = counted(tiny.model)
        SVDInbetweenSampler.execute(m, ps, ns, pe, ne, lat, SEED, 3, 1.0, "mpd_trf", 5, 0.5, 0.5, "batched",
                                    guidance=guidance, min_cfg=0.5)
        assert counter.per_call[3:] == [fused_videos] * 8, guidance


@pytest.mark.parametrize("mode,schedule,expected", [
    ("mpd", "mpd", [0] * 4 + [1] * 4 + [2, 3, 4, 5]),  # 3 distillations + the ViBiD step's re-noise
    ("mpd_trf", "mpd_trf", [0] * 2 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3)])
def test_noise_draws_are_the_authors_in_count_and_order(tiny, aug_conds, mode, schedule, expected):
    """The SAMPLER calls noise_sampler(sigma, sigma_next) once per randn_like of their loop, in their order:
    the same count and step as theirs, and (test above) the same stream gives the same latents, which an order
    change would not."""
    import comfy.samplers

    from svd_inbetween.samplers.mpd import sample_mpd
    from svd_inbetween.samplers.schedule import recurrence_noise_sampler
    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "karras", STEPS)
    calls, stream = [], recurrence_noise_sampler(aug_conds[4]["samples"], SEED)

    def recording(sigma, sigma_next):
        calls.append(int((sigmas == sigma).nonzero()[0]))
        assert sigma_next == sigmas[calls[-1] + 1]
        return stream(sigma, sigma_next)
    sampler = comfy.samplers.KSAMPLER(sample_mpd, extra_options={"noise_sampler": recording, "node": "test"})
    a = ours(tiny, aug_conds, mode, "batched", sampler=sampler)
    draws = []
    reference(tiny, aug_conds, schedule, draws=draws)
    assert calls == expected and len(draws) == len(expected)
    assert torch.equal(a, ours(tiny, aug_conds, mode, "batched"))  # the default noise sampler is that stream


def test_pins_are_the_clean_keyframes_at_augmentation(tiny, aug_conds):
    """DDS pins encode(keyframe), not the noise-augmented concat latent; stock conds pin their concat latent."""
    import comfy.samplers
    from test_host_vibid import one_call_sampler

    from svd_inbetween.samplers.run import make_guider
    from svd_inbetween.samplers.settings import GenerationSettings, KeyframeConds
    ps, ns, pe, ne, lat = aug_conds
    start, end = clean_latents(tiny)
    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "karras", 4)[2:]
    noisy = tiny.model.model.process_latent_in(pe[0][1]["concat_latent_image"])
    assert (noisy - end).abs().max().item() > 1e-3 * end.abs().max().item()  # the augmentation is visible
    for mode in ("vibid", "mpd"):
        for direction, frame, want in (("forward", 4, end), ("backward", 0, start), ("distilled", 0, start)):
            answers = []
            guider = make_guider("test", tiny.model, KeyframeConds(ps, ns, pe, ne),
                                 GenerationSettings(cfg=1.0, mode=mode, execution="batched"))
            sampler = one_call_sampler(direction, answers)
            setattr(sampler.sampler_function, "svd_inbetween_sampler", "mpd" if mode == "mpd" else "vibid")
            if direction == "distilled" and mode == "vibid":
                continue
            guider.sample(torch.zeros_like(lat["samples"]), lat["samples"], sampler, sigmas, seed=1)
            (got_frame, pin), = answers[0].pins.items()
            assert got_frame == frame and torch.equal(pin, want), (mode, direction)
    # stock SVD_img2vid_Conditioning conds carry no clean latent: their concat latent is pinned
    stock_pe = [[pe[0][0], {k: v for k, v in pe[0][1].items() if k != "svd_inbetween_keyframe_latent"}]]
    answers = []
    guider = make_guider("test", tiny.model, KeyframeConds(ps, ns, stock_pe, ne),
                         GenerationSettings(cfg=1.0, mode="vibid", execution="batched"))
    guider.sample(torch.zeros_like(lat["samples"]), lat["samples"], one_call_sampler("forward", answers), sigmas,
                  seed=1)
    assert torch.equal(answers[0].pins[4], noisy)


def test_bad_building_blocks_and_settings_are_refused_before_any_model_call(tiny):
    import comfy.sample
    import comfy.samplers
    from test_host_vibid import counted

    from svd_inbetween.nodes.sampler import (SVDInbetweenGuider, SVDInbetweenMPDSampler, SVDInbetweenRecurrentEuler,
                                             SVDInbetweenViBiDSampler)
    from svd_inbetween.samplers.validation import InbetweenInputError
    ps, ns, pe, ne, lat = tiny.conds
    m, counter = counted(tiny.model)
    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "karras", 3)
    noise = comfy.sample.prepare_noise(lat["samples"], 0)
    mpd = SVDInbetweenMPDSampler.execute().args[0]

    def guider(mode):
        return SVDInbetweenGuider.execute(m, ps, ns, pe, ne, 1.0, mode, 0.5, "batched").args[0]
    stock = comfy.samplers.CFGGuider(m)
    stock.set_conds(ps, ns)
    with pytest.raises(InbetweenInputError, match="SVDInbetweenMPDSampler: input 'sampler'.*SVD Inbetween Guider"):
        stock.sample(noise, lat["samples"], mpd, sigmas)
    for mode, says in (("vibid", "needs the SVDInbetweenViBiDSampler"),
                       ("gi_no_finetune", "SVDInbetweenMPDSampler needs a guider in mode mpd")):
        with pytest.raises(InbetweenInputError, match=f"SVDInbetweenGuider: input 'mode'.*{says}"):
            guider(mode).sample(noise, lat["samples"], mpd, sigmas)
    euler = SVDInbetweenRecurrentEuler.execute(5, 0.5).args[0]
    vibid = SVDInbetweenViBiDSampler.execute().args[0]
    for mode in ("mpd", "mpd_trf"):
        for other in (euler, vibid):
            with pytest.raises(InbetweenInputError, match=f"SVDInbetweenGuider: input 'mode'.*'{mode}'.*"
                                                          "SVDInbetweenMPDSampler"):
                guider(mode).sample(noise, lat["samples"], other, sigmas)
    assert counter.per_call == []
    for kwargs, name in ((dict(mpd_distill_fraction=float("nan")), "mpd_distill_fraction"),
                         (dict(mpd_trf_distill_fraction=1.5), "mpd_trf_distill_fraction"),
                         (dict(mpd_distill_iterations=0), "mpd_distill_iterations"),
                         (dict(mpd_trf_distill_iterations=0), "mpd_trf_distill_iterations"),
                         (dict(mpd_trf_repeats=-1), "mpd_trf_repeats")):
        with pytest.raises(InbetweenInputError, match=f"SVDInbetweenMPDSampler: input '{name}'"):
            SVDInbetweenMPDSampler.execute(**kwargs)
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import Distillation, GenerationSettings
    with pytest.raises(InbetweenInputError, match="test: input 'mpd_distill_fraction'"):
        sample_inbetween("test", m, tiny.keyframe_conds, lat,
                         GenerationSettings(steps=3, cfg=1.0, mode="mpd", mpd=Distillation(float("inf"), 3)))
    with pytest.raises(InbetweenInputError, match="test: input 'model'.*mpd_gi.*'mpd' or 'mpd_trf'"):
        sample_inbetween("test", m, tiny.keyframe_conds, lat, GenerationSettings(steps=3, cfg=1.0, mode="mpd_gi"))
    assert counter.per_call == []


@pytest.mark.parametrize("mode", ["mpd", "mpd_trf", "mpd_gi"])
def test_all_in_one_equals_custom_advanced_calls_per_request_and_stock_model_untouched(tiny, mode):
    from fixtures_host import stock_ksampler
    from test_host_vibid import counted

    from svd_inbetween.nodes.sampler import SVDInbetweenSampler
    ps, ns, pe, ne, lat = tiny.conds
    ref = stock_ksampler(tiny.model, tiny.conds, 3, 2)
    base = tiny.model_gi if mode == "mpd_gi" else tiny.model
    m, counter = counted(base)
    node = SVDInbetweenSampler.execute(m, ps, ns, pe, ne, lat, SEED, STEPS, 1.0, mode, 5, 0.5, 0.5,
                                       "batched")[0]["samples"]
    assert torch.equal(node, ours(tiny, tiny.conds, mode, "batched", model=base))
    # videos per UNet call: distilled / forward 2 (cond + uncond); backward 2, or 4 with the forward chunks that
    # hand it their maps (mpd_gi); fused at cfg 1: forward cond + uncond and backward cond
    backward = 4 if mode == "mpd_gi" else 2
    if mode == "mpd_trf":
        expected = [2, 2, backward] + [3] * 4 * (STEPS - 1)
    else:
        expected = ([2] * 3 + [2, backward]) * 2 + [2, backward] * (STEPS - 2)
    assert counter.per_call == expected
    assert torch.equal(stock_ksampler(tiny.model, tiny.conds, 3, 2), ref)


def test_mpd_gi_uses_the_backward_model_and_is_mpd_in_the_degenerate_case(tiny):
    """mpd_gi's backward steps use rot180 of the forward maps and W_v'/W_o'. With W' = W, start == end and a
    model whose forward pass commutes with a time flip, the rotated maps are the backward pass's own, so
    mpd_gi == mpd; with the random W' it differs."""
    import comfy.sample
    import comfy.samplers
    import tiny_models as tm
    from fixtures_host import conditioning
    from test_host_vibid import stock_sampler

    from svd_inbetween.attention_patch.layers import with_proxies
    from svd_inbetween.weights.apply import model_base_weights
    assert (ours(tiny, tiny.conds, "mpd_gi", "batched", model=tiny.model_gi)
            - ours(tiny, tiny.conds, "mpd", "batched")).abs().max().item() > 1e-4

    sym = tm.tiny_svd_model(seed=5)
    unet = sym.model.diffusion_model
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim == 5 and p.shape[2] == 3:  # temporal convs [out, in, 3, 1, 1]: symmetric in time
                p.copy_((p + p.flip(2)) / 2)
            if "time_pos_embed.2.weight" in name:  # frame position embedding: the same for every frame
                p.zero_()
    same = with_proxies(sym, {p: (v.detach().clone(), o.detach().clone())
                              for p, (v, o) in model_base_weights(sym).items()})
    ps, ns, _, _, lat = conditioning(tiny.clip_vision, tiny.vae)
    conds = (ps, ns, ps, ns, lat)  # start == end

    stock = comfy.samplers.CFGGuider(sym)  # the symmetrised model really commutes with the time flip
    stock.set_conds(ps, ns)
    stock.set_cfg(1.0)
    sigmas = comfy.samplers.calculate_sigmas(sym.get_model_object("model_sampling"), "karras", 4)[1:]
    noise = comfy.sample.prepare_noise(lat["samples"], 5)
    flipped, plain_x0 = (stock.sample(noise, lat["samples"], stock_sampler(f, []), sigmas, seed=5) for f in (True, False))
    assert (flipped - plain_x0).abs().max().item() < 1e-4 * plain_x0.abs().max().item()
    plain = ours(tiny, conds, "mpd", "batched", model=sym)
    rotated = ours(tiny, conds, "mpd_gi", "batched", model=same)
    diff = (plain - rotated).abs().max().item()
    print(f"mpd_gi (W' = W, start == end, flip-symmetric model) vs mpd: max abs diff {diff:.3g}")
    assert diff <= 1e-4 * plain.abs().max().item()


def test_mpd_without_distillation_is_vibid(tiny, aug_conds):
    """mpd_distill_fraction 0: every step is ViBiD's, on the same noise stream: bit for bit the vibid mode."""
    from fixtures_host import sample_custom_advanced
    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenMPDSampler, SVDInbetweenViBiDSampler
    ps, ns, pe, ne, lat = aug_conds
    results = []
    for mode, sampler in (("mpd", SVDInbetweenMPDSampler.execute(mpd_distill_fraction=0.0).args[0]),
                          ("vibid", SVDInbetweenViBiDSampler.execute().args[0])):
        guider = SVDInbetweenGuider.execute(tiny.model, ps, ns, pe, ne, 1.0, mode, 0.5, "batched").args[0]
        results.append(sample_custom_advanced(tiny.model, guider, sampler, lat, seed=SEED, steps=3))
    assert torch.equal(*results)
