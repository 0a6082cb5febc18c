"""Tiny random SVD models built with ComfyUI's own classes (sub-second on CPU).

The UNet is the benchmark's `tiny` architecture (bench/models.py): SVD's real block
structure (16 temporal attn1 at the real module paths) at model_channels 32. Every
parameter is initialised from a seeded generator, because ComfyUI creates layers
uninitialised. Also imported by tests/tiny_pack inside the real server process.
"""
from __future__ import annotations

import json
import os
import tempfile

from host import import_pack

import_pack()  # the repo as `svd_inbetween`, also inside the server process (tests/tiny_pack)

from svd_inbetween.bench.models import ARCH, init_random, svd_patcher  # noqa: E402

CONTEXT_DIM = ARCH["tiny"].context_dim
HEAD_CHANNELS = ARCH["tiny"].head_channels

CLIP_CONFIG = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 32,
    "image_size": 32, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64,
    "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": 2,
    "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8, "projection_dim": CONTEXT_DIM,
    "torch_dtype": "float32",
}

VAE_CONFIG = {"params": {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}


def unet_config() -> dict:
    from svd_inbetween.bench.models import unet_config as arch_config
    return arch_config("tiny")


def tiny_svd_model(seed: int = 0):
    """A ModelPatcher around a tiny random `SVD_img2vid` (fp32, weights on the CPU)."""
    return svd_patcher("tiny", seed=seed)


def tiny_clip_vision(seed: int = 1, **config):
    """A tiny CLIP vision model; `config` overrides entries of CLIP_CONFIG."""
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(dict(CLIP_CONFIG, **config), f)
    try:
        cv = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    init_random(cv.model, seed, std=0.02)
    return cv


def tiny_vae(seed: int = 2):
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    template = AutoencoderKL(**VAE_CONFIG["params"])
    init_random(template, seed, std=0.05)
    return comfy.sd.VAE(sd=template.state_dict(), config=VAE_CONFIG)


TINY_FILM = "tiny_film.safetensors"


def host_has_film() -> bool:
    """ComfyUI 0.33+ ships FILM (comfy_extras/frame_interpolation_models/film_net.py)."""
    import importlib.util
    try:
        return importlib.util.find_spec("comfy_extras.frame_interpolation_models.film_net") is not None
    except ModuleNotFoundError:
        return False


def write_tiny_film(folder: str, seed: int = 3) -> str:
    """A random FILM file that the host's FrameInterpolationModelLoader detects and loads: ComfyUI's own FILMNet
    class at the only size that loader builds (FILMNet() with its defaults, 34M parameters; a smaller config would
    not load), weights from a seeded generator, fp16 (69 MB, written at test time). Returns its file name."""
    import torch
    from comfy_extras.frame_interpolation_models.film_net import FILMNet
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in FILMNet().state_dict().items()}
    # small weights, zero biases: the flows stay small, the output a blend of the keyframes
    sd = {k: (torch.zeros(s) if k.endswith("bias") else torch.randn(s, generator=g) * 0.02).half()
          for k, s in shapes.items()}
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, TINY_FILM))
    return TINY_FILM
