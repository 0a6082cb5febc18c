"""Host: SVDInbetweenChain (N keyframes -> one video) on tiny random SVD models in real ComfyUI."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.host

STEPS = 2
SEED = 3


def images(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Keyframes of another size and aspect than the video, so resizing is exercised."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 72, 88, 3, generator=g) for _ in range(n)]


def settings(**kw):
    args = dict(width=64, height=64, frames="5", motion_bucket_id=127, fps=7, augmentation_level=0.02,
                resize="crop", seed=SEED, steps=STEPS, cfg=2.0, mode="gi", recurrence=1, recurrence_ratio=0.5,
                forward_weight=0.5, execution="batched")
    args.update(kw)
    return args


def model_for(tiny, mode):
    return tiny.model_gi if mode in ("gi", "vibid_gi", "mpd_gi") else tiny.model


def chain(tiny, keys, model=None, **kw):
    from svd_inbetween.nodes.chain import SVDInbetweenChain
    args = settings(**kw)
    out = SVDInbetweenChain.execute(model or model_for(tiny, args["mode"]), tiny.clip_vision, tiny.vae,
                                    torch.cat(keys), **args)
    return out.args[0], out.args[1]["samples"]


def plain(tiny, a, b, **kw):
    """SVDInbetweenConditioning + SVDInbetweenSampler with the chain's settings."""
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    from svd_inbetween.nodes.sampler import SVDInbetweenSampler
    s = settings(**kw)
    ps, ns, pe, ne, lat = SVDInbetweenConditioning.execute(
        tiny.clip_vision, tiny.vae, a, b, s["width"], s["height"], int(s["frames"]), s["motion_bucket_id"], s["fps"],
        s["augmentation_level"], s["resize"], s["seed"]).args
    out = SVDInbetweenSampler.execute(model_for(tiny, s["mode"]), ps, ns, pe, ne, lat, s["seed"], s["steps"], s["cfg"],
                                      s["mode"], s["recurrence"], s["recurrence_ratio"], s["forward_weight"],
                                      s["execution"])[0]["samples"]
    return out, (ps, pe)


def fitted(key):
    from svd_inbetween.conditioning.keyframes import fit_image
    return fit_image(key, 64, 64, "crop")[0]


@pytest.mark.parametrize("mode", ["gi", "vibid", "mpd", "mpd_trf"])
def test_one_segment_equals_the_plain_sampler_and_ends_are_the_keyframes(tiny, mode):
    a, b = images(2)
    pixels, latent = chain(tiny, [a, b], mode=mode, cfg=2.0 if mode == "gi" else 1.0)
    ref, _ = plain(tiny, a, b, mode=mode, cfg=2.0 if mode == "gi" else 1.0)
    assert torch.equal(latent, ref)
    assert pixels.shape == (5, 64, 64, 3)
    assert torch.equal(pixels[1:-1], tiny.vae.decode(ref)[1:-1])
    assert torch.equal(pixels[0], fitted(a)) and torch.equal(pixels[-1], fitted(b))


def test_loop_chain_frames_boundaries_coupling_determinism_and_no_leaks(tiny, monkeypatch):
    import comfy.sampler_helpers
    from fixtures_host import stock_ksampler
    a, b = images(2, seed=1)
    ps, ns, _, _, lat = tiny.conds

    def ksampler():
        return stock_ksampler(tiny.model, tiny.conds, SEED, STEPS)
    before = ksampler()
    estimate, shapes = comfy.sampler_helpers.estimate_memory, []
    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory",
                        lambda model, shape, conds: shapes.append(tuple(shape)) or estimate(model, shape, conds))
    pixels, latent = chain(tiny, [a, b, a], frames="3, 4")
    monkeypatch.undo()
    assert shapes == [(4, 4, 8, 8)]  # the model is loaded for one segment's call, not for the whole chain
    assert pixels.shape == (6, 64, 64, 3) and latent.shape == (6, 4, 8, 8)  # 3 + 4 - 1 shared frame
    for frame, key in ((0, a), (2, b), (5, a)):
        assert torch.equal(pixels[frame], fitted(key)), frame
    again_pixels, again = chain(tiny, [a, b, a], frames="3, 4")
    assert torch.equal(again, latent) and torch.equal(again_pixels, pixels)
    # the first segment alone (same seed, same first-frame noise) differs inside the segment, not only
    # at the shared frame: the neighbours were denoised together
    alone, _ = plain(tiny, a, b, frames="3")
    assert (alone[1] - latent[1]).abs().max().item() > 1e-5
    assert torch.equal(ksampler(), before)


@pytest.mark.parametrize("mode", ["vibid_gi", "mpd"])
def test_vibid_chain_pins_every_keyframe_the_last_half_step_pins(tiny, mode):
    """vibid's (and mpd's) endpoint consistency over a chain: the last (backward) half-step pins the start
    keyframe of every segment, so those latent frames are the CLEAN keyframes' latents (augmentation 0.02),
    not the noise-augmented conditioning latents."""
    from svd_inbetween.conditioning.keyframes import CLEAN_LATENT_KEY
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    a, b, c = images(3, seed=2)
    _, latent = chain(tiny, [a, b, c], frames="3,4", mode=mode, cfg=1.0)
    assert latent.shape == (6, 4, 8, 8)

    def key_latents(x, y, key):  # the conditioning the chain makes for x and y at its seed
        ps, _, pe, _, _ = SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, x, y, 64, 64, 3, 127, 7, 0.02,
                                                           "crop", SEED).args
        return ps[0][1][key][0], pe[0][1][key][0]
    lat_a, _ = key_latents(a, b, CLEAN_LATENT_KEY)
    lat_b, lat_c = key_latents(b, c, CLEAN_LATENT_KEY)
    noisy_a, _ = key_latents(a, b, "concat_latent_image")
    assert (latent[0] - lat_a).abs().max().item() < 1e-5
    assert (latent[2] - lat_b).abs().max().item() < 1e-5
    assert (latent[0] - noisy_a).abs().max().item() > 1e-3
    assert (latent[5] - lat_c).abs().max().item() > 1e-3  # the last keyframe is pinned by forward halves only


@pytest.mark.parametrize("keys,kw,name,match", [
    (1, {}, "images", "at least 2 keyframes"),
    (3, {"frames": "5,5,5"}, "frames", "3 frame counts for 2 segments"),
    (2, {"frames": "2"}, "frames", "at least 3"),
    (2, {"width": 60}, "width", "multiples of 8"),
    (2, {"mode": "nope"}, "mode", "must be one of"),
])
def test_bad_inputs_name_node_and_input(tiny, keys, kw, name, match):
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError, match=match) as e:
        chain(tiny, images(keys), **kw)
    assert str(e.value).startswith(f"SVDInbetweenChain: input '{name}'")


@pytest.mark.parametrize("mode", ["gi", "vibid_gi"])
def test_modes_that_need_backward_weights_say_so(tiny, mode):
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError, match="SVDInbetweenChain: input 'model'.*SVDInbetweenLoadBackwardWeights"):
        chain(tiny, images(2), model=tiny.model, mode=mode)
