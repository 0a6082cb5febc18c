"""Test-only custom node: tiny random SVD MODEL, CLIP_VISION and VAE, in the same output
order as ImageOnlyCheckpointLoader, so shipped workflows run with it swapped in."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

import tiny_models  # noqa: E402

_CACHE = {}


class SVDInbetweenTestTinyModels:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {"default": "tiny"})}}

    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, ckpt_name):
        if "models" not in _CACHE:
            _CACHE["models"] = (tiny_models.tiny_svd_model(), tiny_models.tiny_clip_vision(), tiny_models.tiny_vae())
        return _CACHE["models"]


NODE_CLASS_MAPPINGS = {"SVDInbetweenTestTinyModels": SVDInbetweenTestTinyModels}


# --- Tiny Wan 2.1 (tests/tiny_wan.py) in place of the Wan templates' loaders and text encoder (comfy_job.tiny_prompt)

def _tiny_wan(kind: str, make):
    if kind not in _CACHE:
        _CACHE[kind] = make()
    return _CACHE[kind]


class SVDInbetweenTestTinyWanModel:
    """UNETLoader's place: the tiny FLF2V model for a file named like FLF2V, else the tiny I2V model."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": ("STRING", {"default": "tiny"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, unet_name):
        import tiny_wan
        if "flf2v" in unet_name:
            return (_tiny_wan("wan_flf", tiny_wan.tiny_wan_flf_model),)
        return (_tiny_wan("wan_i2v", tiny_wan.tiny_wan_i2v_model),)


class SVDInbetweenTestTinyWanVAE:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ("STRING", {"default": "tiny"})}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, vae_name):
        import tiny_wan
        return (_tiny_wan("wan_vae", tiny_wan.tiny_wan_vae),)


class SVDInbetweenTestTinyWanClipVision:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": "tiny"})}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, clip_name):
        import tiny_wan
        return (_tiny_wan("wan_clip_vision", tiny_wan.tiny_wan_clip_vision),)


class SVDInbetweenTestTinyWanText:
    """CLIPLoader + CLIPTextEncode's place (no tiny UMT5): seeded random text conditioning, one seed per text, so
    two prompts give two conditionings and one prompt always the same."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "_for_testing"

    def encode(self, text):
        import zlib

        import torch
        import tiny_wan
        g = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
        return ([[torch.randn(1, tiny_wan.TEXT_TOKENS, tiny_wan.TEXT_DIM, generator=g), {}]],)


NODE_CLASS_MAPPINGS.update({
    "SVDInbetweenTestTinyWanModel": SVDInbetweenTestTinyWanModel,
    "SVDInbetweenTestTinyWanVAE": SVDInbetweenTestTinyWanVAE,
    "SVDInbetweenTestTinyWanClipVision": SVDInbetweenTestTinyWanClipVision,
    "SVDInbetweenTestTinyWanText": SVDInbetweenTestTinyWanText,
})


# --- Robustness tests (tests/test_server_robustness.py): latents out of the server, cache busting,
# --- and models/encoders the sampler must refuse.

def _tiny_non_svd_model():
    """A tiny random SD1.5-style MODEL (not SVD); it is only ever refused, never sampled."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"model_channels": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
           "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
           "transformer_depth_middle": 1, "context_dim": tiny_models.CONTEXT_DIM, "use_linear_in_transformer": True,
           "adm_in_channels": None, "use_temporal_attention": False, "image_size": 32,
           "use_spatial_transformer": True, "legacy": False}
    mc = comfy.supported_models.SD15(cfg)
    mc.unet_config.update(num_head_channels=16, num_heads=-1)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({}, device=torch.device("cpu"))
    tiny_models.init_random(model.diffusion_model, 3)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def _tiny_other_clip_vision():
    """A tiny CLIP vision whose embedding width (32) differs from the tiny SVD's context (64)."""
    return tiny_models.tiny_clip_vision(seed=4, projection_dim=tiny_models.CONTEXT_DIM // 2)


class SVDInbetweenTestOtherModels:
    """MODEL that is not SVD and a CLIP_VISION from another model family (for refusal tests)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "other"})}}

    RETURN_TYPES = ("MODEL", "CLIP_VISION")
    FUNCTION = "load"
    CATEGORY = "_for_testing"

    def load(self, name):
        if "other" not in _CACHE:
            _CACHE["other"] = (_tiny_non_svd_model(), _tiny_other_clip_vision())
        return _CACHE["other"]


class SVDInbetweenTestNonce:
    """LATENT passthrough with an irrelevant `nonce`: changing it makes everything downstream re-execute."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "passthrough"
    CATEGORY = "_for_testing"

    def passthrough(self, latent, nonce):
        out = dict(latent)
        out["samples"] = latent["samples"].clone()
        return (out,)


class SVDInbetweenTestLatentDigest:
    """Saves a LATENT to output/latents/<name>.safetensors and reports its SHA-256 in the UI output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "name": ("STRING", {"default": "latent"})}}

    RETURN_TYPES = ()
    FUNCTION = "digest"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"

    def digest(self, samples, name):
        import hashlib

        import folder_paths
        from safetensors.torch import save_file

        t = samples["samples"].detach().float().cpu().contiguous()
        folder = os.path.join(folder_paths.get_output_directory(), "latents")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{os.path.basename(name)}.safetensors")
        save_file({"samples": t}, path)
        info = {"name": name, "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
                "shape": list(t.shape), "sum": float(t.double().sum()), "file": path}
        return {"ui": {"latent": [info]}}


NODE_CLASS_MAPPINGS.update({
    "SVDInbetweenTestOtherModels": SVDInbetweenTestOtherModels,
    "SVDInbetweenTestNonce": SVDInbetweenTestNonce,
    "SVDInbetweenTestLatentDigest": SVDInbetweenTestLatentDigest,
})
