"""Host: conditioning identities and clear errors for bad inputs."""
from __future__ import annotations

import pytest
import torch

from fixtures_host import FRAMES, SIZE, keyframes

pytestmark = pytest.mark.host


def sample(tiny, model=None, conds=None, **kw):
    from svd_inbetween.samplers.run import sample_inbetween
    from svd_inbetween.samplers.settings import GenerationSettings, KeyframeConds
    ps, ns, pe, ne, lat = conds or tiny.conds
    args = dict(seed=1, steps=2, cfg=2.0, mode="gi", recurrence=1, recurrence_ratio=0.5, forward_weight=0.5,
                execution="batched")
    args.update(kw)
    return sample_inbetween("SVDInbetweenSampler", model or tiny.model_gi, KeyframeConds(ps, ns, pe, ne), lat,
                            GenerationSettings(**args))["samples"]


def stock_conds(tiny, image, frames=FRAMES, size=SIZE):
    from comfy_extras.nodes_video_model import SVD_img2vid_Conditioning
    return SVD_img2vid_Conditioning().encode(tiny.clip_vision, image, tiny.vae, size, size, frames, 127, 7, 0.0)


def test_conditioning_equals_two_stock_nodes(tiny):
    a, b = keyframes()
    ps, ns, pe, ne, lat = tiny.conds
    for ours_pos, ours_neg, img in ((ps, ns, a), (pe, ne, b)):
        pos, neg, slat = stock_conds(tiny, img)
        assert torch.equal(ours_pos[0][0], pos[0][0]) and torch.equal(ours_neg[0][0], neg[0][0])
        assert torch.equal(ours_pos[0][1]["concat_latent_image"], pos[0][1]["concat_latent_image"])
        assert torch.equal(ours_neg[0][1]["concat_latent_image"], neg[0][1]["concat_latent_image"])
        assert torch.equal(lat["samples"], slat["samples"])


def test_sampler_accepts_stock_conditioning_and_gives_the_same_video(tiny):
    a, b = keyframes()
    ps, ns, lat = stock_conds(tiny, a)
    pe, ne, _ = stock_conds(tiny, b)
    assert torch.equal(sample(tiny, conds=(ps, ns, pe, ne, lat)), sample(tiny))


def test_augmentation_is_seeded_and_shared(tiny):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    a, b = keyframes()
    run = lambda seed: SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, a, b, SIZE, SIZE, FRAMES, 127,  # noqa: E731
                                                        7, 0.02, "crop", seed).args
    x, y, z = run(0), run(0), run(1)
    assert torch.equal(x[0][0][1]["concat_latent_image"], y[0][0][1]["concat_latent_image"])
    assert not torch.equal(x[0][0][1]["concat_latent_image"], z[0][0][1]["concat_latent_image"])
    clean = tiny.conds[0][0][1]["concat_latent_image"]
    assert not torch.equal(x[0][0][1]["concat_latent_image"], clean)


@pytest.mark.parametrize("mode", ["crop", "stretch", "pad"])
def test_resize_modes_produce_the_requested_size(tiny, mode):
    from svd_inbetween.conditioning.keyframes import fit_image
    img = torch.rand(1, 48, 96, 3)
    out = fit_image(img, 64, 32 + 8, mode)
    assert out.shape == (1, 40, 64, 3)
    if mode == "pad":
        assert torch.allclose(out[0, 0, 0], torch.full((3,), 0.5))


def errors(fn):
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError) as e:
        fn()
    return str(e.value)


def test_gi_without_backward_weights(tiny):
    msg = errors(lambda: sample(tiny, model=tiny.model))
    assert "SVDInbetweenSampler" in msg and "'model'" in msg and "SVDInbetweenLoadBackwardWeights" in msg
    sample(tiny, model=tiny.model, mode="trf")  # the stock model is fine for the ablations


def test_non_svd_model(tiny):
    import comfy.model_patcher
    import comfy.supported_models
    mc = comfy.supported_models.SD15({"model_channels": 32, "in_channels": 4, "out_channels": 4, "use_linear_in_transformer": False,
                                      "adm_in_channels": None, "use_temporal_attention": False,
                                      "num_res_blocks": [1, 1], "channel_mult": [1, 2],
                                      "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
                                      "context_dim": 64, "num_head_channels": 16, "image_size": 32,
                                      "use_spatial_transformer": True, "legacy": False})
    mc.unet_config.update(num_heads=-1, num_head_channels=16)
    not_svd = comfy.model_patcher.ModelPatcher(mc.get_model({}, device=torch.device("cpu")), torch.device("cpu"),
                                               torch.device("cpu"))
    msg = errors(lambda: sample(tiny, model=not_svd, mode="trf"))
    assert "'model'" in msg and "Stable Video Diffusion" in msg


def test_mismatched_sizes_and_frame_counts(tiny):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    ps, ns, pe, ne, lat = tiny.conds
    a, b = keyframes(size=96)
    big = SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, a, b, 96, 96, FRAMES, 127, 7, 0.0, "crop", 0).args
    msg = errors(lambda: sample(tiny, conds=(ps, ns, big[2], big[3], lat)))
    assert "positive_end" in msg and "96x96" in msg and "64x64" in msg
    longer = SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, *keyframes(), SIZE, SIZE, 7, 127, 7, 0.0,
                                              "crop", 0).args
    msg = errors(lambda: sample(tiny, conds=(ps, ns, longer[2], longer[3], lat)))
    assert "frame" in msg
    msg = errors(lambda: sample(tiny, conds=(ps, ns, pe, ne, longer[4])))
    assert "latent_image" in msg and "7 frames" in msg


def test_too_few_frames_bad_steps_and_nan(tiny):
    ps, ns, pe, ne, lat = tiny.conds
    short = {"samples": lat["samples"][:2]}
    assert "at least 3" in errors(lambda: sample(tiny, conds=(ps, ns, pe, ne, short)))
    assert "'steps'" in errors(lambda: sample(tiny, steps=-1))  # 0 is the mode's own (test_host_mode_settings)
    nan = {"samples": lat["samples"].clone()}
    nan["samples"][0, 0, 0, 0] = float("nan")
    assert "NaN" in errors(lambda: sample(tiny, conds=(ps, ns, pe, ne, nan)))
    bad_pos = [[ps[0][0].clone(), dict(ps[0][1])]]
    bad_pos[0][0][..., 0] = float("nan")
    msg = errors(lambda: sample(tiny, conds=(bad_pos, ns, pe, ne, lat)))
    assert "positive_start" in msg and "NaN" in msg
    assert "forward_weight" in errors(lambda: sample(tiny, forward_weight=1.5))
    assert "not SVD conditioning" in errors(lambda: sample(tiny, conds=([[ps[0][0], {}]], ns, pe, ne, lat)))


def test_conditioning_node_rejects_batches_and_odd_sizes(tiny):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    a, b = keyframes()
    msg = errors(lambda: SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, torch.cat([a, a]), b, SIZE, SIZE,
                                                          FRAMES, 127, 7, 0.0, "crop", 0))
    assert "SVDInbetweenConditioning" in msg and "start_image" in msg
    msg = errors(lambda: SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, a, b, 66, SIZE, FRAMES, 127, 7,
                                                          0.0, "crop", 0))
    assert "multiples of 8" in msg


def test_combo_values_are_checked_with_the_node_name(tiny):
    assert "'mode'" in errors(lambda: sample(tiny, mode="nope"))
    assert "'execution'" in errors(lambda: sample(tiny, execution="nope"))
    assert "'scheduler'" in errors(lambda: sample(tiny, scheduler="nope"))


def test_conditioning_the_backward_pass_cannot_pair_is_refused(tiny):
    import node_helpers
    ps, ns, pe, ne, lat = tiny.conds
    combined = ps + ps
    assert "2 entries" in errors(lambda: sample(tiny, conds=(combined, ns, pe, ne, lat)))
    ranged = node_helpers.conditioning_set_values(pe, {"start_percent": 0.0, "end_percent": 0.5})
    msg = errors(lambda: sample(tiny, conds=(ps, ns, ranged, ne, lat)))
    assert "positive_end" in msg and "timestep range" in msg


def test_attn1_replace_patches_are_refused_for_rotating_modes(tiny):
    patched = tiny.model_gi.clone()
    patched.set_model_attn1_replace(lambda q, k, v, extra: q, "input", 1)
    assert "attn1 replace" in errors(lambda: sample(tiny, model=patched))


def test_backward_weights_follow_the_compute_device(tiny):
    """A proxy built while its model sat elsewhere moves W_v'/W_o' to the input's device when used."""
    from svd_inbetween.attention_patch.layers import proxies, with_proxies
    own = with_proxies(tiny.model, tiny.backward)  # fresh proxies: the shared fixture's stay untouched
    proxy = next(p for p in proxies(own).values())
    to_v, to_out = proxy._backward_projections(torch.device("meta"))
    assert to_v.weight.device.type == "meta" and to_out.weight.device.type == "meta"
