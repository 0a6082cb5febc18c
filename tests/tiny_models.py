"""Tiny random SVD models built with ComfyUI's own classes (sub-second on CPU).

The UNet keeps SVD's real block structure (16 temporal attn1 at the real module
paths) at model_channels 32. Every parameter is initialised from a seeded
generator, because ComfyUI creates layers uninitialised.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch

CONTEXT_DIM = 64
HEAD_CHANNELS = 16

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


def init_module(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or "mix_factor" in name:
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def unet_config() -> dict:
    return {
        "model_channels": 32, "in_channels": 8, "out_channels": 4, "use_linear_in_transformer": True,
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
        "transformer_depth_middle": 1, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
        "context_dim": CONTEXT_DIM, "adm_in_channels": 768, "use_temporal_attention": True,
        "use_temporal_resblock": True, "image_size": 32, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "disable_self_attentions": None,
        "num_attention_blocks": None, "extra_ff_mix_layer": True, "use_spatial_context": True,
        "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
        "disable_temporal_crossattention": False, "max_ddpm_temb_period": 10000,
    }


def tiny_svd_model(seed: int = 0):
    """A ModelPatcher around a tiny random `SVD_img2vid` (fp32, CPU)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    mc = comfy.supported_models.SVD_img2vid(unet_config())
    mc.unet_config["num_head_channels"] = HEAD_CHANNELS
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({}, device=torch.device("cpu"))
    init_module(model.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def tiny_clip_vision(seed: int = 1, **config):
    """A tiny CLIP vision model; `config` overrides entries of CLIP_CONFIG."""
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(dict(CLIP_CONFIG, **config), f)
    try:
        cv = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    init_module(cv.model, seed, std=0.02)
    return cv


def tiny_vae(seed: int = 2):
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    template = AutoencoderKL(**VAE_CONFIG["params"])
    init_module(template, seed, std=0.05)
    return comfy.sd.VAE(sd=template.state_dict(), config=VAE_CONFIG)
