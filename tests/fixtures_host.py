"""Shared builders for host tests (tiny models, keyframes, conds, weights)."""
from __future__ import annotations

import torch

import tiny_models as tm

SIZE, FRAMES = 64, 5


def keyframes(seed: int = 0, size: int = SIZE):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, size, size, 3, generator=g), torch.rand(1, size, size, 3, generator=g)


def conditioning(cv, vae, frames: int = FRAMES, size: int = SIZE, aug: float = 0.0, seed: int = 0):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    a, b = keyframes(seed, size)
    return SVDInbetweenConditioning.execute(cv, vae, a, b, size, size, frames, 127, 7, aug, "crop", 0).args


class Tiny:
    def __init__(self):
        from svd_inbetween.attention_patch.layers import with_proxies
        from svd_inbetween.bench.models import random_backward_weights
        from svd_inbetween.samplers.settings import KeyframeConds
        self.model = tm.tiny_svd_model()
        self.clip_vision = tm.tiny_clip_vision()
        self.vae = tm.tiny_vae()
        self.backward = random_backward_weights(self.model)
        self.model_gi = with_proxies(self.model, self.backward)
        self.conds = conditioning(self.clip_vision, self.vae)
        self.keyframe_conds = KeyframeConds(*self.conds[:4])  # what the facades take


def stock_ksampler(model, conds, seed: int, steps: int, cfg: float = 2.0) -> torch.Tensor:
    """Latents of ComfyUI's stock KSampler (euler, karras) with the start-frame conds: the reference."""
    import nodes
    ps, ns, _, _, lat = conds
    return nodes.common_ksampler(model, seed, steps, cfg, "euler", "karras", ps, ns, lat)[0]["samples"]


def sample_custom_advanced(model, guider, sampler, latent: dict, seed: int, steps: int) -> torch.Tensor:
    """Latents from the stock SamplerCustomAdvanced with seeded noise and karras sigmas."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced

    class Noise:
        def __init__(self):
            self.seed = seed

        def generate_noise(self, lat):
            return comfy.sample.prepare_noise(lat["samples"], self.seed)

    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", steps)
    return SamplerCustomAdvanced().sample(Noise(), guider, sampler, sigmas, latent)[0]["samples"]
