"""Host: the tiny random Wan 2.1 I2V / FLF2V models (tests/tiny_wan.py) go through ComfyUI's own Wan nodes,
KSampler and VAEDecode on the real host, with the shapes ComfyUI's Wan path gives."""
from __future__ import annotations

import time

import pytest
import torch

pytestmark = pytest.mark.host

SIZE, LENGTH = 64, 9
LATENT = [1, 16, 3, SIZE // 8, SIZE // 8]  # 1 + (9 - 1) // 4 = 3 latent frames


@pytest.fixture(scope="module")
def wan():
    import tiny_wan as tw
    t0 = time.perf_counter()
    models = tw.tiny_wan_models()
    print(f"tiny Wan models built in {time.perf_counter() - t0:.3f} s "
          f"(FLF2V model: {'yes' if models['flf_model'] is not None else 'no'}; "
          f"VAE dim from state dict: {tw.vae_reads_dim_from_sd()})")
    g = torch.Generator().manual_seed(7)
    models["start"] = torch.rand(1, SIZE, SIZE, 3, generator=g)
    models["end"] = torch.rand(1, SIZE, SIZE, 3, generator=g)
    models["text"] = tw.tiny_wan_text_conds()
    return models


def clip_encode(cv, image):
    import nodes
    return nodes.CLIPVisionEncode().encode(cv, image, "none")[0]


def ksampler(model, pos, neg, latent, seed):
    import nodes
    return nodes.common_ksampler(model, seed, 2, 3.0, "euler", "simple", pos, neg, latent)[0]["samples"]


def test_build_time_and_model_classes(wan):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_sampling
    import tiny_wan as tw
    t0 = time.perf_counter()
    tw.tiny_wan_models(seed=3)
    print(f"tiny Wan models (I2V, FLF2V, VAE, CLIP vision) built in {time.perf_counter() - t0:.3f} s")
    base = wan["model"].model
    assert type(base) is comfy.model_base.WAN21 and base.image_to_video
    assert isinstance(base.latent_format, comfy.latent_formats.Wan21)
    assert isinstance(base.model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
    assert base.model_sampling.shift == 8.0
    dm = base.diffusion_model
    assert (dm.model_type, dm.in_dim, dm.out_dim, dm.dim, len(dm.blocks)) == ("i2v", 36, 16, 32, 2)
    assert dm.patch_embedding.weight.shape[1] == 36 and dm.img_emb.proj[0].weight.shape == (1280,)
    assert dm.img_emb.emb_pos is None
    if wan["flf_model"] is not None:
        assert wan["flf_model"].model.diffusion_model.img_emb.emb_pos.shape == (1, 2 * tw.CLIP_TOKENS, 1280)
    assert all(torch.isfinite(p).all() for p in dm.parameters())
    vae = wan["vae"]
    assert type(vae.first_stage_model).__name__ == "WanVAE" and vae.first_stage_model.dim == tw.VAE_DIM
    assert vae.latent_channels == 16 and vae.latent_dim == 3
    assert vae.spacial_compression_encode() == 8


def test_comfy_detects_tiny_flf_state_dict_as_wan21_flf2v(wan):
    """ComfyUI's checkpoint detection reads FLF2V from img_emb.emb_pos (and I2V from img_emb.proj.0.bias)."""
    import comfy.model_detection
    if wan["flf_model"] is None:
        pytest.skip("host WanModel has no flf_pos_embed_token_number")
    sd = wan["flf_model"].model.diffusion_model.state_dict()
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    assert (cfg["image_model"], cfg["model_type"], cfg["in_dim"], cfg["out_dim"], cfg["dim"]) == \
        ("wan2.1", "i2v", 36, 16, 32)
    assert cfg["flf_pos_embed_token_number"] == 34
    assert cfg["num_heads"] == 32 // 128  # detection assumes 128-wide heads: a file of this tiny model won't load
    plain = comfy.model_detection.detect_unet_config(wan["model"].model.diffusion_model.state_dict(), "")
    assert "flf_pos_embed_token_number" not in plain and plain["model_type"] == "i2v"


def test_vae_9_frames_to_3_latent_frames_and_back(wan):
    import nodes
    vae = wan["vae"]
    pixels = torch.rand(LENGTH, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    latent = vae.encode(pixels)
    assert list(latent.shape) == LATENT and torch.isfinite(latent).all()
    assert torch.equal(vae.encode(pixels), latent)
    video = vae.decode(latent)
    assert list(video.shape) == [1, LENGTH, SIZE, SIZE, 3]  # 1 + 4 * (3 - 1) frames
    images = nodes.VAEDecode().decode(vae, {"samples": latent})[0]
    assert list(images.shape) == [LENGTH, SIZE, SIZE, 3]
    assert images.min() >= 0.0 and images.max() <= 1.0
    # frames beyond 4N + 1 are dropped: 10 frames -> 3 latent frames; 1 frame -> 1
    assert vae.encode(torch.rand(10, SIZE, SIZE, 3)).shape[2] == 3
    assert vae.encode(pixels[:1]).shape[2] == 1


def test_wan_image_to_video_then_ksampler(wan):
    from comfy_extras.nodes_wan import WanImageToVideo
    pos, neg = wan["text"]
    cvo = clip_encode(wan["clip_vision"], wan["start"])
    assert list(cvo.penultimate_hidden_states.shape) == [1, 17, 1280]
    pos, neg, latent = WanImageToVideo.execute(pos, neg, wan["vae"], SIZE, SIZE, LENGTH, 1,
                                               start_image=wan["start"], clip_vision_output=cvo).args
    extra = pos[0][1]
    assert list(latent["samples"].shape) == LATENT
    assert list(extra["concat_latent_image"].shape) == LATENT
    mask = extra["concat_mask"]  # one channel per LATENT frame; 0 = keep (the start image's latent frame)
    assert list(mask.shape) == [1, 1, 3, SIZE // 8, SIZE // 8]
    assert mask[:, :, 0].eq(0).all() and mask[:, :, 1:].eq(1).all()
    assert extra["clip_vision_output"] is cvo and neg[0][1]["concat_latent_image"] is extra["concat_latent_image"]
    a = ksampler(wan["model"], pos, neg, latent, seed=5)
    assert list(a.shape) == LATENT and torch.isfinite(a).all()
    assert torch.equal(ksampler(wan["model"], pos, neg, latent, seed=5), a)
    assert (ksampler(wan["model"], pos, neg, latent, seed=6) - a).abs().max() > 1e-3
    import nodes
    assert list(nodes.VAEDecode().decode(wan["vae"], {"samples": a})[0].shape) == [LENGTH, SIZE, SIZE, 3]


def test_wan_first_last_frame_to_video_then_ksampler(wan):
    from comfy_extras.nodes_wan import WanFirstLastFrameToVideo
    if wan["flf_model"] is None:
        pytest.skip("host WanModel has no flf_pos_embed_token_number")
    pos, neg = wan["text"]
    cva, cvb = clip_encode(wan["clip_vision"], wan["start"]), clip_encode(wan["clip_vision"], wan["end"])
    pos, neg, latent = WanFirstLastFrameToVideo.execute(
        pos, neg, wan["vae"], SIZE, SIZE, LENGTH, 1, start_image=wan["start"], end_image=wan["end"],
        clip_vision_start_image=cva, clip_vision_end_image=cvb).args
    extra = pos[0][1]
    assert list(latent["samples"].shape) == LATENT
    assert list(extra["concat_latent_image"].shape) == LATENT
    # 4 channels per latent frame = pixel slots 4l + c of [frame 0 x4, frames 1..8]: the start image fills
    # latent frame 0, the end image (frame 8, slot 11) only channel 3 of latent frame 2.
    mask = extra["concat_mask"]
    assert list(mask.shape) == [1, 4, 3, SIZE // 8, SIZE // 8]
    expect = torch.tensor([[0., 1., 1.], [0., 1., 1.], [0., 1., 1.], [0., 1., 0.]])
    assert torch.equal(mask[0, :, :, 0, 0], expect) and torch.equal(mask, mask[..., :1, :1].expand_as(mask))
    states = extra["clip_vision_output"].penultimate_hidden_states  # start and end tokens, concatenated
    assert list(states.shape) == [1, 34, 1280]
    assert torch.equal(states[:, :17], cva.penultimate_hidden_states)
    assert torch.equal(states[:, 17:], cvb.penultimate_hidden_states)
    a = ksampler(wan["flf_model"], pos, neg, latent, seed=5)
    assert list(a.shape) == LATENT and torch.isfinite(a).all()
    assert torch.equal(ksampler(wan["flf_model"], pos, neg, latent, seed=5), a)
    # the plain I2V model takes the same conds (34 CLIP tokens, no position embedding) and differs
    b = ksampler(wan["model"], pos, neg, latent, seed=5)
    assert list(b.shape) == LATENT and torch.isfinite(b).all() and (a - b).abs().max() > 1e-4


def test_concat_latent_with_other_frame_count_is_an_error(wan):
    """WAN21.concat_cond resizes the concat latent and mask in H, W only (bilinear) and zero-pads a short
    mask in time; a concat latent whose frame count differs from the noise's is not resized: RuntimeError."""
    import node_helpers
    pos, neg = wan["text"]
    latent = {"samples": torch.zeros(LATENT)}
    for frames in (2, 4):
        extra = {"concat_latent_image": torch.zeros(1, 16, frames, 8, 8), "concat_mask": torch.ones(1, 1, 3, 8, 8)}
        p = node_helpers.conditioning_set_values(pos, extra)
        n = node_helpers.conditioning_set_values(neg, extra)
        with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
            ksampler(wan["model"], p, n, latent, seed=1)
    base = wan["model"].model
    noise = torch.zeros(LATENT)
    cc = base.concat_cond(noise=noise, concat_latent_image=torch.zeros(1, 16, 3, 16, 16),
                          concat_mask=torch.zeros(1, 1, 1, 64, 64), device="cpu")
    assert list(cc.shape) == [1, 20, 3, 8, 8]
    assert cc[:, :4, 0].eq(1).all() and cc[:, :4, 1:].eq(0).all()  # 1 - mask; padded frames = 0 (generate)
