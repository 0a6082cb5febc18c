"""Tiny random Wan 2.1 image-to-video models built with ComfyUI's own classes (sub-second on CPU).

- `tiny_wan_i2v_model`: a ModelPatcher around `comfy.model_base.WAN21(image_to_video=True)` made by
  `comfy.supported_models.WAN21_I2V` (the class ComfyUI picks for a Wan 2.1 I2V checkpoint: flow model,
  shift 8, `latent_formats.Wan21`), with a tiny `comfy.ldm.wan.model.WanModel` (in_dim 36 = 16 noise +
  4 mask + 16 image latent, out_dim 16).
- `tiny_wan_flf_model`: the same with `flf_pos_embed_token_number` (Wan 2.1 FLF2V: `img_emb.emb_pos`,
  a learned position embedding over the start and end images' CLIP tokens).
- `tiny_wan_vae`: `comfy.sd.VAE` built from the state dict of a tiny `comfy.ldm.wan.vae.WanVAE`
  (z_dim 16), so ComfyUI takes its own Wan 2.1 VAE branch (4x temporal, 8x spatial compression).
- `tiny_wan_clip_vision`: a tiny CLIP vision model whose penultimate hidden states are 1280 wide, the
  width that every host's WanModel hard-codes for `img_emb` (`MLPProj(1280, dim)`).
- `tiny_wan_text_conds`: positive/negative CONDITIONING as a text encoder would give it (no tiny UMT5;
  the tensors are seeded random, `TEXT_DIM` wide).

Every parameter comes from a seeded generator (ComfyUI creates layers uninitialised). fp32, CPU.
"""
from __future__ import annotations

import contextlib

import torch

import tiny_models as tm
from svd_inbetween.bench.models import init_random

# WanModel: head dim 16 -> RoPE axes [8, 4, 4] (d - 4*(d//6), 2*(d//6), 2*(d//6)).
WAN_CONFIG = {
    "image_model": "wan2.1", "model_type": "i2v", "patch_size": (1, 2, 2), "in_dim": 36, "out_dim": 16,
    "dim": 32, "ffn_dim": 64, "freq_dim": 256, "text_dim": 32, "num_heads": 2, "num_layers": 2,
    "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
TEXT_DIM = WAN_CONFIG["text_dim"]
TEXT_TOKENS = 8
CLIP_WIDTH = 1280  # WanModel.img_emb = MLPProj(1280, dim) on 0.3.64, 0.8 and 0.33
# 32 px / patch 8 -> 16 patches + class token = 17 tokens per image (the real ViT-H/14 at 224: 257).
# 2 layers: penultimate_hidden_states is layer 0's output.
CLIP_VISION_CONFIG = {"hidden_size": CLIP_WIDTH, "intermediate_size": 64, "num_attention_heads": 16,
                      "num_hidden_layers": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32}
CLIP_TOKENS = (CLIP_VISION_CONFIG["image_size"] // CLIP_VISION_CONFIG["patch_size"]) ** 2 + 1
FLF_TOKENS = 2 * CLIP_TOKENS  # the real FLF2V model: 514 = 2 x 257
# WanVAE: ComfyUI's branch fixes dim_mult [1, 2, 4, 4], num_res_blocks 2, temperal_downsample
# [False, True, True] and z_dim 16; only `dim` is free (read from decoder.head.0.gamma on 0.8+, 96 fixed
# on 0.3.64; the real Wan 2.1 VAE has dim 96).
VAE_DIM = 8
VAE_CONFIG = {"dim": VAE_DIM, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}


def _wan_patcher(unet_config: dict, seed: int, config_class: str = "WAN21_I2V"):
    from svd_inbetween.bench.wan import wan_patcher
    return wan_patcher(unet_config, seed, config_class)


def tiny_wan_i2v_model(seed: int = 0):
    """ModelPatcher around a tiny random Wan 2.1 I2V `WAN21` (fp32, weights on the CPU)."""
    return _wan_patcher(dict(WAN_CONFIG), seed)


def tiny_wan22_i2v_expert(seed: int = 0):
    """One expert of Wan2.2 I2V A14B as ComfyUI loads it: no CLIP image embedding (model_type t2v, what
    model_detection says without img_emb.proj), 36 input channels (noise + mask + image latent), WAN21_T2V."""
    return _wan_patcher(dict(WAN_CONFIG, model_type="t2v"), seed, "WAN21_T2V")


def host_has_flf() -> bool:
    import inspect

    import comfy.ldm.wan.model
    return "flf_pos_embed_token_number" in inspect.signature(comfy.ldm.wan.model.WanModel).parameters


def tiny_wan_flf_model(seed: int = 0, tokens: int = FLF_TOKENS):
    """The FLF2V variant: `img_emb.emb_pos` [1, tokens, 1280] (ComfyUI detects FLF2V by that key)."""
    return _wan_patcher(dict(WAN_CONFIG, flf_pos_embed_token_number=tokens), seed)


def vae_reads_dim_from_sd() -> bool:
    """0.8+ builds the Wan 2.1 VAE with dim = sd["decoder.head.0.gamma"].shape[0]; 0.3.64 always with 96."""
    import inspect

    import comfy.sd
    return "decoder.head.0.gamma" in inspect.getsource(comfy.sd.VAE.__init__)


@contextlib.contextmanager
def _wan_vae_dim(dim: int):
    """0.3.64 only: let comfy.sd.VAE's own Wan 2.1 branch build WanVAE at `dim` instead of its fixed 96
    (the branch calls comfy.ldm.wan.vae.WanVAE by module attribute; restored on exit)."""
    import comfy.ldm.wan.vae as wan_vae
    original = wan_vae.WanVAE

    def build(**config):
        return original(**dict(config, dim=dim))

    wan_vae.WanVAE = build
    try:
        yield
    finally:
        wan_vae.WanVAE = original


def tiny_wan_vae(seed: int = 2, dim: int = VAE_DIM):
    """comfy.sd.VAE on a tiny random WanVAE state dict: ComfyUI's Wan 2.1 VAE branch (latent_channels 16,
    latent frames 1 + (T - 1) // 4, spatial /8; decode gives 1 + 4 * (L - 1) frames)."""
    import comfy.ldm.wan.vae
    import comfy.sd

    template = comfy.ldm.wan.vae.WanVAE(**dict(VAE_CONFIG, dim=dim))
    init_random(template, seed, std=0.05)
    with torch.no_grad():  # RMS_norm gammas are [C, 1, 1(, 1)]: unit norms, like init_random's 1-d ones
        for name, p in template.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    sd = template.state_dict()
    if vae_reads_dim_from_sd():
        return comfy.sd.VAE(sd=sd)
    with _wan_vae_dim(dim):
        return comfy.sd.VAE(sd=sd)


def tiny_wan_clip_vision(seed: int = 1):
    """Tiny CLIP vision (ComfyUI's ClipVisionModel); penultimate_hidden_states [B, 17, 1280]."""
    return tm.tiny_clip_vision(seed, **CLIP_VISION_CONFIG)


def tiny_wan_text_conds(seed: int = 4, tokens: int = TEXT_TOKENS):
    """(positive, negative) CONDITIONING lists with seeded random text embeddings [1, tokens, TEXT_DIM]."""
    g = torch.Generator().manual_seed(seed)
    return ([[torch.randn(1, tokens, TEXT_DIM, generator=g), {}]],
            [[torch.randn(1, tokens, TEXT_DIM, generator=g), {}]])


def tiny_wan_models(seed: int = 0) -> dict:
    """All of them: model, flf_model (None where the host's WanModel has no FLF2V), vae, clip_vision."""
    return {"model": tiny_wan_i2v_model(seed),
            "flf_model": tiny_wan_flf_model(seed) if host_has_flf() else None,
            "vae": tiny_wan_vae(seed + 2), "clip_vision": tiny_wan_clip_vision(seed + 1)}
