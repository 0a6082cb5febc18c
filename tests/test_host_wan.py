"""Host: Wan Keyframes to Video, Wan Keyframe Decode and Wan Anchor Frame on tiny random Wan 2.1 models in the real
host: the native layout equals WanFirstLastFrameToVideo bit for bit, the separate layout is the AFB authors' (mask,
latent frames) with each keyframe's latent the VAE's encoding of that keyframe alone, the decode gives exactly the
clip's frames with every keyframe at its place, the anchor is the reverse clip's frame, and bad input stops before
any model call."""
from __future__ import annotations


import pytest
import torch

import afb_reference as ref

pytestmark = pytest.mark.host

SIZE = 64


@pytest.fixture(scope="module")
def wan():
    import tiny_wan as tw
    models = tw.tiny_wan_models()
    g = torch.Generator().manual_seed(11)
    models["images"] = torch.rand(4, SIZE, SIZE, 3, generator=g)
    models["text"] = tw.tiny_wan_text_conds()
    import nodes
    models["cv"] = [nodes.CLIPVisionEncode().encode(models["clip_vision"], models["images"][i:i + 1], "none")[0]
                    for i in range(2)]
    return models


def keyframes(wan, frames, layout, anchors=0, position=-1, strengths=(1.0, 1.0, 1.0), clip=True, batch=1, **kw):
    from svd_inbetween.nodes.wan import SVDInbetweenWanKeyframes
    pos, neg = wan["text"]
    im = wan["images"]
    return SVDInbetweenWanKeyframes.execute(
        pos, neg, wan["vae"], im[:1], im[3:4], SIZE, SIZE, frames, layout, batch, *strengths, position,
        im[1:1 + anchors] if anchors else None, wan["cv"][0] if clip else None, wan["cv"][1] if clip else None,
        **kw).args


def ksampler(model, pos, neg, latent, seed=5, steps=2):
    import nodes
    return nodes.common_ksampler(model, seed, steps, 3.0, "euler", "simple", pos, neg, latent)[0]


def test_inside_layout_is_wan_first_last_frame_to_video_bit_for_bit(wan):
    from comfy_extras.nodes_wan import WanFirstLastFrameToVideo
    pos, neg = wan["text"]
    im = wan["images"]
    for frames, batch in ((9, 1), (13, 2)):
        n_pos, n_neg, n_lat = WanFirstLastFrameToVideo.execute(
            pos, neg, wan["vae"], SIZE, SIZE, frames, batch, start_image=im[:1], end_image=im[3:4],
            clip_vision_start_image=wan["cv"][0], clip_vision_end_image=wan["cv"][1]).args
        o_pos, o_neg, o_lat = keyframes(wan, frames, "inside", batch=batch)
        assert torch.equal(o_lat["samples"], n_lat["samples"])
        for ours, theirs in ((o_pos, n_pos), (o_neg, n_neg)):
            a, b = ours[0][1], theirs[0][1]
            assert torch.equal(a["concat_latent_image"], b["concat_latent_image"])
            assert torch.equal(a["concat_mask"], b["concat_mask"]) and a["concat_mask"].dtype == b["concat_mask"].dtype
            assert torch.equal(a["clip_vision_output"].penultimate_hidden_states,
                               b["clip_vision_output"].penultimate_hidden_states)
            assert torch.equal(ours[0][0], theirs[0][0])
        # and so the sampled latents are equal too
        assert torch.equal(ksampler(wan["model"], o_pos, o_neg, o_lat)["samples"],
                           ksampler(wan["model"], n_pos, n_neg, n_lat)["samples"])


@pytest.mark.parametrize("frames,anchors,m", [(6, 0, None), (10, 0, None), (7, 1, 0), (11, 1, 1), (11, 1, 0)])
def test_separate_layout_is_the_authors_with_each_keyframe_encoded_alone(wan, frames, anchors, m):
    import comfy.utils
    position = 1 + 4 * m if anchors else -1
    pos, neg, latent = keyframes(wan, frames, "separate", anchors, position)
    k = anchors + 2
    theirs = ref.mask(frames, k, m, SIZE // 8, SIZE // 8)
    extra = pos[0][1]
    assert latent["samples"].shape == (1, 16, ref.noise_frames(frames, k), SIZE // 8, SIZE // 8)
    assert torch.equal(1.0 - extra["concat_mask"][0], theirs)
    cond = extra["concat_latent_image"]
    assert cond.shape == latent["samples"].shape
    im = wan["images"]
    fitted = comfy.utils.common_upscale(torch.cat([im[:1], im[1:1 + anchors], im[3:4]]).movedim(-1, 1), SIZE, SIZE,
                                        "bilinear", "center").movedim(1, -1)
    at = [t for t in range(theirs.shape[1]) if theirs[0, t, 0, 0] == 1]
    assert len(at) == k
    for i, t in enumerate(at):  # each keyframe's latent frame: the VAE's encoding of that keyframe alone
        assert torch.equal(cond[:, :, t:t + 1], wan["vae"].encode(fitted[i:i + 1])), (i, t)


def test_decode_gives_the_clip_with_every_keyframe_at_its_place(wan):
    from svd_inbetween.nodes.wan import SVDInbetweenWanDecode
    from svd_inbetween.wan.pieces import LAYOUT_KEY
    for frames, layout, anchors in ((6, "separate", 0), (11, "separate", 1), (9, "inside", 1), (16, "separate", 2)):
        pos, neg, latent = keyframes(wan, frames, layout, anchors)
        positions = latent[LAYOUT_KEY]["positions"]
        out = ksampler(wan["model"], pos, neg, latent)
        assert out[LAYOUT_KEY] == latent[LAYOUT_KEY]  # the sampler carries the layout along
        video = SVDInbetweenWanDecode.execute(out, wan["vae"]).args[0]
        assert video.shape == (frames, SIZE, SIZE, 3)
        # the conditioning latent decodes to each keyframe's own decode at its position
        cond = {"samples": pos[0][1]["concat_latent_image"], LAYOUT_KEY: latent[LAYOUT_KEY]}
        clip = SVDInbetweenWanDecode.execute(cond, wan["vae"]).args[0]
        assert clip.shape[0] == frames
        if layout == "separate":
            for i, p in enumerate(positions):
                t = [a for a, _ in __import__("svd_inbetween.wan.pieces", fromlist=["x"]).layout_from_record(
                    latent[LAYOUT_KEY]).latent_pieces()][i]
                alone = wan["vae"].decode(cond["samples"][:, :, t:t + 1])[0, 0]
                assert torch.equal(clip[p], alone), (frames, i, p)
    # a plain Wan latent decodes as VAEDecode does
    import nodes
    plain = {"samples": torch.randn(1, 16, 3, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))}
    assert torch.equal(SVDInbetweenWanDecode.execute(plain, wan["vae"]).args[0],
                       nodes.VAEDecode().decode(wan["vae"], plain)[0])


def test_sampling_is_deterministic_and_strength_matters(wan):
    pos, neg, latent = keyframes(wan, 7, "separate", 1)
    a = ksampler(wan["model"], pos, neg, latent)["samples"]
    assert torch.isfinite(a).all() and torch.equal(a, ksampler(wan["model"], pos, neg, latent)["samples"])
    pos2, neg2, _ = keyframes(wan, 7, "separate", 1, strengths=(1.0, 1.0, 0.5))
    assert (ksampler(wan["model"], pos2, neg2, latent)["samples"] - a).abs().max() > 1e-4
    if wan["flf_model"] is not None:  # the FLF2V model takes the native layout, with an anchor
        pos, neg, latent = keyframes(wan, 9, "inside", 1)
        assert torch.isfinite(ksampler(wan["flf_model"], pos, neg, latent)["samples"]).all()


def test_wan22_a14b_two_experts_take_the_conditioning_without_clip_vision(wan):
    """Wan2.2 I2V A14B: a high-noise and a low-noise expert (KSamplerAdvanced hands over at step 1 of 2), no CLIP
    vision; the anchor's strength reaches both."""
    import nodes
    import tiny_wan as tw
    high, low = tw.tiny_wan22_i2v_expert(5), tw.tiny_wan22_i2v_expert(6)
    assert not high.model.image_to_video and high.model.diffusion_model.patch_embedding.weight.shape[1] == 36

    def two_experts(strengths):
        pos, neg, latent = keyframes(wan, 7, "separate", 1, strengths=strengths, clip=False)
        assert "clip_vision_output" not in pos[0][1]
        ksa = nodes.KSamplerAdvanced()
        mid = ksa.sample(high, "enable", 3, 2, 3.0, "euler", "simple", pos, neg, latent, 0, 1, "enable")[0]
        out = ksa.sample(low, "disable", 3, 2, 3.0, "euler", "simple", pos, neg, mid, 1, 10000, "disable")[0]
        from svd_inbetween.nodes.wan import SVDInbetweenWanDecode
        video = SVDInbetweenWanDecode.execute(out, wan["vae"]).args[0]
        assert video.shape == (7, SIZE, SIZE, 3) and torch.isfinite(out["samples"]).all()
        return out["samples"]
    a = two_experts((1.0, 1.0, 1.0))
    assert torch.equal(a, two_experts((1.0, 1.0, 1.0)))
    assert (two_experts((1.0, 1.0, 0.0)) - a).abs().max() > 1e-4  # start, end, anchor strength


def test_the_model_input_refuses_what_would_ignore_the_keyframes(wan):
    """Optional `model`: an image-to-video Wan passes (I2V, FLF2V, a Wan2.2 A14B expert); a text-to-video Wan (16
    input channels: it would take the conds and drop the keyframes) and an SVD model are refused before any call."""
    import tiny_models
    import tiny_wan as tw
    from svd_inbetween.samplers.validation import InbetweenInputError
    for ok in (wan["model"], wan["flf_model"], tw.tiny_wan22_i2v_expert(5)):
        if ok is not None:
            keyframes(wan, 6, "separate", model=ok)
    t2v = tw._wan_patcher(dict(tw.WAN_CONFIG, model_type="t2v", in_dim=16), 3, "WAN21_T2V")
    with pytest.raises(InbetweenInputError, match=r"SVDInbetweenWanKeyframes: input 'model': takes 16 input channels, "
                                                  r"but keyframes need an image-to-video Wan with 36"):
        keyframes(wan, 6, "separate", model=t2v)
    with pytest.raises(InbetweenInputError, match=r"input 'model': expects a Wan image-to-video model .* got SVD_img2vid"):
        keyframes(wan, 6, "separate", model=tiny_models.tiny_svd_model())


def bad(wan, match, **kw):
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError, match=match):
        keyframes(wan, **kw)


def test_bad_input_is_an_error_naming_node_and_input(wan):
    bad(wan, r"SVDInbetweenWanKeyframes: input 'frames': frames 8 does not fit .* use 6 or 10",
        frames=8, layout="separate")
    bad(wan, r"input 'frames': frames 10 does not fit the 'inside' layout.*use 9 or 13", frames=10, layout="inside")
    bad(wan, r"input 'anchor_position': anchor_position 10 is outside the clip", frames=11, layout="separate", anchors=1,
        position=10)
    bad(wan, r"input 'anchor_position': places one anchor image, but anchor_image holds 2", frames=14,
        layout="separate", anchors=2, position=5)
    bad(wan, r"input 'layout'", frames=9, layout="diagonal")
    bad(wan, r"input 'anchor_position': is a frame number, or -1", frames=7, layout="separate", anchors=1, position=-5)
    bad(wan, r"input 'frames': makes a video of 5002 frames; a video has 3 to 4096", frames=5002, layout="separate")
    from svd_inbetween.nodes.wan import SVDInbetweenWanKeyframes
    from svd_inbetween.samplers.validation import InbetweenInputError
    pos, neg = wan["text"]
    im = wan["images"]
    with pytest.raises(InbetweenInputError, match=r"input 'end_image': is 32x64 but start_image is 64x64"):
        SVDInbetweenWanKeyframes.execute(pos, neg, wan["vae"], im[:1], im[3:4, :, :32], SIZE, SIZE, 6, "separate", 1,
                                         1.0, 1.0, 1.0, -1)
    # an anchor at the video's own size (cut from a decoded clip) goes with keyframes of another size
    big = torch.rand(2, 96, 80, 3, generator=torch.Generator().manual_seed(1))
    SVDInbetweenWanKeyframes.execute(pos, neg, wan["vae"], big[:1], big[1:], SIZE, SIZE, 7, "separate", 1,
                                     1.0, 1.0, 1.0, -1, im[1:2])
    with pytest.raises(InbetweenInputError, match=r"input 'anchor_image': is 32x64 but start_image is 80x96"):
        SVDInbetweenWanKeyframes.execute(pos, neg, wan["vae"], big[:1], big[1:], SIZE, SIZE, 7, "separate", 1,
                                         1.0, 1.0, 1.0, -1, im[1:2, :, :32])
    import tiny_models
    with pytest.raises(InbetweenInputError, match=r"input 'vae': expects the Wan 2.1 VAE .* 4 channels"):
        SVDInbetweenWanKeyframes.execute(pos, neg, tiny_models.tiny_vae(), im[:1], im[3:4], SIZE, SIZE, 6,
                                         "separate", 1, 1.0, 1.0, 1.0, -1)
    with pytest.raises(InbetweenInputError, match=r"input 'frames': a 16384x16384 video of 4094 frames needs .* GiB"):
        SVDInbetweenWanKeyframes.execute(pos, neg, wan["vae"], im[:1], im[3:4], 16384, 16384, 4094, "separate", 1,
                                         1.0, 1.0, 1.0, -1)
    with pytest.raises(InbetweenInputError, match=r"input 'width': Wan needs multiples of 16, got 72x64"):
        SVDInbetweenWanKeyframes.execute(pos, neg, wan["vae"], im[:1], im[3:4], 72, 64, 6, "separate", 1,
                                         1.0, 1.0, 1.0, -1)
    from svd_inbetween.nodes.wan import SVDInbetweenWanDecode
    with pytest.raises(InbetweenInputError, match=r"SVDInbetweenWanDecode: input 'samples': has 5 latent frames"):
        _, _, latent = keyframes(wan, 6, "separate")
        SVDInbetweenWanDecode.execute(dict(latent, samples=torch.zeros(1, 16, 5, 8, 8)), wan["vae"])


def test_the_authors_schedule_is_simple_with_shift_5():
    """Their FlowMatchScheduler (shift 5, 50 steps): sigma_i = 5 t / (1 + 4 t) on t = linspace(1, 0, 51)[:-1], then
    0. ComfyUI's `simple` scheduler under ModelSamplingSD3 shift 5 gives the same sigmas to float32 rounding."""
    import comfy.model_sampling
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: F401  (the node the workflows use)

    class Flow(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    ms = Flow(None)
    ms.set_parameters(shift=5.0, multiplier=1000)
    t = torch.linspace(1, 0, 51, dtype=torch.float64)[:-1]
    theirs = torch.cat([5 * t / (1 + 4 * t), torch.zeros(1, dtype=torch.float64)])
    ours = comfy.samplers.calculate_sigmas(ms, "simple", 50).double()
    assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) < 2e-7


# ---------------------------------------------------------------- Wan Anchor Frame with the real LPIPS


@pytest.fixture(scope="module")
def lpips_folder():
    """A random AlexNet in torchvision's file name, first in the host's models/lpips (no download): the bench's."""
    from svd_inbetween.bench.wan import random_lpips_backbone
    with random_lpips_backbone(0):
        yield


def smooth(frames, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 1, SIZE, SIZE, 3, generator=g)
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    return a * (1 - t) + b * t


def test_anchor_is_the_reverse_clips_frame_at_the_mirrored_breakpoint(lpips_folder):
    from svd_inbetween.nodes.wan import SVDInbetweenWanAnchor
    forward, reverse = smooth(22, 0), smooth(22, 1)
    forward[13] = torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    image, position, scores = SVDInbetweenWanAnchor.execute(forward, reverse, 1, "alex").args
    assert position == 13 and torch.equal(image[0], reverse[22 - 1 - 13])
    values = [float(s) for s in scores.split(",")]
    assert len(values) == 22 and max(values[1:-1]) == values[13]
    # the time-reversed clip gives the mirrored breakpoint
    _, mirrored, _ = SVDInbetweenWanAnchor.execute(forward.flip(0), reverse, 1, "alex").args
    assert mirrored == 22 - 1 - 13


def test_anchor_bad_input(lpips_folder):
    from svd_inbetween.nodes.wan import SVDInbetweenWanAnchor
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError, match=r"input 'reverse_video': has 10 frames, fewer than forward_video's 12"):
        SVDInbetweenWanAnchor.execute(smooth(12, 0), smooth(10, 1), 1, "alex")
    with pytest.raises(InbetweenInputError, match=r"input 'edge_frames'"):
        SVDInbetweenWanAnchor.execute(smooth(6, 0), smooth(6, 1), 3, "alex")
    with pytest.raises(InbetweenInputError, match=r"input 'lpips_net': LPIPS \(vgg\) needs .*vgg16-397923af.pth.*"
                                                  r"models/lpips/.*never downloads"):
        SVDInbetweenWanAnchor.execute(smooth(6, 0), smooth(6, 1), 1, "vgg")
