"""The research implementation's scheme, rebuilt for the benchmark (the nodes never use it).

jeanne-wang/svd_keyframe_interpolation keeps two full UNets. `ori_unet` (stock SVD-XT)
runs the forward direction and stores the post-softmax map of every temporal
self-attention of that call; `unet`, a deep copy carrying the fine-tuned W_v'/W_o' in
its weights, runs the time-reversed direction, computes its own Q/K and the map they
give, throws that map away and attends with rot180 of the stored one. CFG is a batch
of two videos in each call, so one fused evaluation is two UNet calls.

This module does the same on a ComfyUI SVD model with its own attention maths and its
own Euler loop, sharing nothing with the pack's proxies or guider, so that the pack's
one-model execution can be checked against it (same seed, same latent) and measured
beside it. The modes the paper ablates are expressed the same way: `gi_no_finetune`
rotates only the up (output) blocks and leaves the copy's weights stock, `trf` rotates
nothing.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..attention_patch.layers import PREFIX, original_module, temporal_attn1_paths
from ..attention_patch.modes import FUSED_MODES, rotate_layers
from ..samplers.schedule import recurrence_generator

REFERENCE_MODES = FUSED_MODES


def rotated_paths(paths: list[str], mode: str) -> list[str]:
    """Layers whose backward pass attends with the forward maps, per the pack's mode table."""
    if mode not in REFERENCE_MODES:
        raise ValueError(f"svd-inbetween bench: unknown mode {mode!r}; choose one of {', '.join(REFERENCE_MODES)}")
    return sorted(rotate_layers(paths, mode), key=paths.index)


class MapStore:
    """The maps of the latest forward UNet call, keyed by layer (the research code's controller)."""

    def __init__(self):
        self.maps: dict[str, torch.Tensor] = {}
        self.armed = False
        self.peak_bytes = 0

    def put(self, layer: str, probs: torch.Tensor) -> None:
        self.maps[layer] = probs
        held = sum(m.numel() * m.element_size() for m in self.maps.values())
        self.peak_bytes = max(self.peak_bytes, held)

    def take(self, layer: str) -> torch.Tensor:
        return self.maps.pop(layer)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    n, frames, width = t.shape
    return t.reshape(n, frames, heads, width // heads).transpose(1, 2)


def own_maps(attn: nn.Module, x, context=None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) of a temporal self-attention, scores in float32: [N, H, T, T]."""
    q = _heads(attn.to_q(x), attn.heads).float()
    k = _heads(attn.to_k(x if context is None else context), attn.heads).float()
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    return scores.softmax(dim=-1).to(x.dtype)


def attend(attn: nn.Module, probs: torch.Tensor, v_in) -> torch.Tensor:
    v = _heads(attn.to_v(v_in), attn.heads)
    out = torch.matmul(probs.to(v.dtype), v)
    n, heads, frames, dim = out.shape
    return attn.to_out(out.transpose(1, 2).reshape(n, frames, heads * dim))


class _MapLayer(nn.Module):
    """A reference-scheme stand-in for one temporal attn1, sharing a MapStore."""

    def __init__(self, original: nn.Module, layer: str, store: MapStore):
        super().__init__()
        self.original = original
        self.layer = layer
        self.store = store


class StoreMaps(_MapLayer):
    """Forward UNet's temporal attn1: computes A explicitly, stores it, attends with it.

    Passes straight to the original module when the store is not armed, so the object
    patch left on the shared model after a run changes nothing for other users.
    """

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        if not self.store.armed:
            return self.original(x, context=context, value=value, mask=mask, transformer_options=transformer_options)
        probs = own_maps(self.original, x, context)
        self.store.put(self.layer, probs)
        return attend(self.original, probs, x if value is None else value)


class RotatedMaps(_MapLayer):
    """Backward UNet's temporal attn1: computes its own A, discards it, attends with rot180(stored A)."""

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        own = own_maps(self.original, x, context)
        del own
        probs = self.store.take(self.layer).flip(-2, -1)
        return attend(self.original, probs, x if value is None else value)


def backward_unet_copy(model_patcher, rotated: list[str], backward: dict | None, store: MapStore) -> nn.Module:
    """A second full copy of the diffusion model with W_v'/W_o' written into its weights."""
    import comfy.utils

    unet = copy.deepcopy(model_patcher.model.diffusion_model)
    for path in temporal_attn1_paths(model_patcher):
        mod = comfy.utils.get_attr(unet, path)
        mod = getattr(mod, "original", mod)  # whatever object patch was applied when copied
        if backward is not None:
            wv, wo = backward[path]
            with torch.no_grad():
                mod.to_v.weight.copy_(wv)
                mod.to_out[0].weight.copy_(wo)
        comfy.utils.set_attr(unet, path, RotatedMaps(mod, path, store) if path in rotated else mod)
    return unet.to(model_patcher.load_device)


def _flip_halves(t: torch.Tensor, frames: int) -> torch.Tensor:
    return t.reshape(-1, frames, *t.shape[1:]).flip(1).reshape(t.shape)


class ReferenceScheme:
    """Two UNets, stored maps, one Euler loop with the paper's recurrence."""

    def __init__(self, model_patcher, mode: str, backward: dict | None):
        if mode == "gi" and backward is None:
            raise ValueError("svd-inbetween bench: the reference 'gi' mode needs backward weights")
        self.paths = temporal_attn1_paths(model_patcher)
        self.rotated = rotated_paths(self.paths, mode)
        self.store = MapStore()
        self.forward_model = model_patcher.clone()
        for path in self.rotated:
            self.forward_model.add_object_patch(PREFIX + path,
                                                StoreMaps(original_module(model_patcher, path), path, self.store))
        self.backward_unet = backward_unet_copy(model_patcher, self.rotated, backward if mode == "gi" else None,
                                                self.store)
        self.unet_calls = 0
        self.unet_videos = 0

    def _apply(self, unet: nn.Module, x, sigma, conds: dict) -> torch.Tensor:
        """What BaseModel._apply_model does, for either UNet: EDM scaling in, v-prediction out."""
        base = self.forward_model.model
        ms = base.model_sampling
        dtype = base.manual_cast_dtype or base.get_dtype()
        t = sigma.expand(x.shape[0])
        xc = torch.cat([ms.calculate_input(t, x), conds["c_concat"].to(x)], dim=1).to(dtype)
        extra = {k: v.to(x.device, dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                 for k, v in conds.items() if k not in ("c_concat", "c_crossattn")}
        self.unet_calls += 1
        self.unet_videos += x.shape[0] // conds["num_video_frames"]
        out = unet(xc, ms.timestep(t).float(), context=conds["c_crossattn"].to(x.device, dtype),
                   transformer_options={}, **extra).float()
        return ms.calculate_denoised(t, out, x)

    def _cfg_batch(self, cond, uncond, noise) -> dict:
        """[cond, uncond] model conds for one direction, built by the model's own extra_conds.

        The research code batches [uncond, cond]; the order is arbitrary, and ComfyUI's
        (cond first) keeps float summation order equal, so differences are the schemes'.
        """
        base = self.forward_model.model
        encoded = []
        for c in (cond, uncond):
            emb, extra = c[0]
            mc = base.extra_conds(**dict(extra, cross_attn=emb, noise=noise, device=noise.device))
            encoded.append({k: v.process_cond(batch_size=noise.shape[0], area=None) for k, v in mc.items()})
        return {k: encoded[0][k].concat([encoded[1][k]]) for k in encoded[0]}

    def fused(self, x, sigma, forward_c, backward_c, cfg: float, forward_weight: float) -> torch.Tensor:
        frames = x.shape[0]
        flip = lambda t: _flip_halves(t, frames)  # noqa: E731
        c, u = self._apply(self.forward_model.model.diffusion_model, torch.cat([x, x]), sigma, forward_c).chunk(2)
        forward = u + (c - u) * cfg
        xb = flip(x)
        c, u = self._apply(self.backward_unet, torch.cat([xb, xb]), sigma, backward_c).chunk(2)
        backward = flip(u + (c - u) * cfg)
        if self.store.maps:
            raise RuntimeError(f"reference: {len(self.store.maps)} stored maps were not used")
        return forward * forward_weight + backward * (1.0 - forward_weight)

    @torch.no_grad()
    def sample(self, positive_start, negative_start, positive_end, negative_end, latent: dict, seed: int,
               steps: int, cfg: float, recurrence: int = 5, recurrence_ratio: float = 0.5,
               forward_weight: float = 0.5, scheduler: str = "karras") -> torch.Tensor:
        import comfy.model_management
        import comfy.sample
        import comfy.samplers

        comfy.model_management.load_models_gpu([self.forward_model])
        base = self.forward_model.model
        device = self.forward_model.load_device
        ms = base.model_sampling
        sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).to(device)
        samples = latent["samples"]
        noise = comfy.sample.prepare_noise(samples, seed).to(device)
        latent_in = samples.to(device)
        if torch.count_nonzero(latent_in) > 0:
            latent_in = base.process_latent_in(latent_in)
        forward_c = self._cfg_batch(positive_start, negative_start, noise)
        backward_c = self._cfg_batch(positive_end, negative_end, noise)
        backward_c = {k: _flip_halves(v, noise.shape[0]) if torch.is_tensor(v) and v.shape[0] == 2 * noise.shape[0]
                      else v for k, v in backward_c.items()}
        max_denoise = math.isclose(float(ms.sigma_max), float(sigmas[0]), rel_tol=1e-5) or sigmas[0] > ms.sigma_max
        x = ms.noise_scaling(sigmas[0], noise, latent_in, max_denoise)
        generator = recurrence_generator(seed)
        last = int(steps * recurrence_ratio)
        self.store.armed = True
        try:
            for i in range(steps):
                sigma, sigma_next = sigmas[i], sigmas[i + 1]
                for r in range(1 + (recurrence if i < last else 0)):
                    if r > 0:
                        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(device)
                        x = x + eps * (sigma ** 2 - sigma_next ** 2).clamp(min=0).sqrt()
                    denoised = self.fused(x, sigma, forward_c, backward_c, cfg, forward_weight)
                    x = x + (x - denoised) / sigma * (sigma_next - sigma)
        finally:
            self.store.armed = False
            self.store.maps.clear()
        x = ms.inverse_noise_scaling(sigmas[-1], x)
        return base.process_latent_out(x.float()).to(comfy.model_management.intermediate_device())
