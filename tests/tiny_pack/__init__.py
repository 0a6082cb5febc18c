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
