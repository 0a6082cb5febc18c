"""The keyframe-chain GUIDER: the segments of one chain latent, each with its own dual-direction guider."""
from __future__ import annotations

import inspect

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers

from .guider import SVDInbetweenGuider
from .protocol import ANSWERS_MARK, DIRECTION_KEY, DirectionRequest
from .windows import fuse_windows

_INNER_SAMPLE_SIGNATURE = inspect.signature(comfy.samplers.CFGGuider.inner_sample)


class SVDInbetweenChainGuider(comfy.samplers.CFGGuider):
    """Segments of one chain latent, denoised in lockstep by their own SVDInbetweenGuiders.

    Segment k owns the window [start_k, stop_k) of the chain latent; neighbouring windows
    share their keyframe frame. Every model call runs each segment on its window and the
    shared frames get the mean of their two predictions (samplers.windows.fuse_windows), so
    both neighbours denoise the same boundary frame at every step. All segment guiders
    must wrap the same ModelPatcher (one model load for the whole chain).
    """

    def __init__(self, segments: list[SVDInbetweenGuider], windows: list[tuple[int, int]]):
        super().__init__(segments[0].model_patcher)
        if any(g.model_patcher is not self.model_patcher for g in segments) or len(segments) != len(windows):
            raise ValueError("chain segments must share one model patcher and have one window each")
        self.segments, self.windows = segments, windows
        self.original_conds = {f"{k}/{name}": c for k, g in enumerate(segments) for name, c in g.original_conds.items()}

    @property
    def mode(self):
        """The segments' mode (one for the chain): what a pack SAMPLER asks of its guider."""
        return self.segments[0].mode

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        largest = max(stop - start for start, stop in self.windows)

        def load_for_one_segment(executor, model, noise_shape, *args, **kwargs):
            # A UNet call holds one segment, not the chain: reserve memory for that.
            return executor(model, torch.Size([largest, *noise_shape[1:]]), *args, **kwargs)

        for g in self.segments:
            g.check_sampler(sampler)
            g.begin_run()
        own_options = self.model_options
        self.model_options = comfy.model_patcher.create_model_options_clone(own_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING,
                                                     "svd_inbetween_chain", load_for_one_segment, self.model_options,
                                                     is_model_options=True)
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = own_options
            for g in self.segments:
                g.end_run()
                for attr in ("conds", "inner_model"):
                    g.__dict__.pop(attr, None)

    def inner_sample(self, *args, **kwargs):
        # The host's CFGGuider.inner_sample processes self.conds against the whole noise; SVD's
        # extra_conds take the video length from that noise, so each segment's conds are processed
        # here against its own window first and the host then runs with nothing left to process.
        bound = _INNER_SAMPLE_SIGNATURE.bind(self, *args, **kwargs).arguments
        noise, latent_image, device = bound["noise"], bound["latent_image"], bound["device"]
        denoise_mask, seed = bound["denoise_mask"], bound["seed"]
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        processed = {}
        for k, (g, (start, stop)) in enumerate(zip(self.segments, self.windows)):
            own = {name: self.conds[f"{k}/{name}"] for name in g.original_conds}
            mask = denoise_mask[start:stop] if denoise_mask is not None else None
            g.inner_model = self.inner_model
            g.conds = comfy.samplers.process_conds(self.inner_model, noise[start:stop], own, device,
                                                   latent_image[start:stop], mask, seed)
            processed.update({f"{k}/{name}": c for name, c in g.conds.items()})
        self.conds = {}
        try:
            return super().inner_sample(*args, **kwargs)
        finally:
            self.conds = processed

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        request: DirectionRequest | None = model_options.get(DIRECTION_KEY)
        preds, unconds, pins = [], [], {}
        for i, (g, (start, stop)) in enumerate(zip(self.segments, self.windows)):
            if i:
                comfy.model_management.throw_exception_if_processing_interrupted()
            opts, sub = model_options, None
            if request is not None:
                sub = DirectionRequest(request.direction)
                opts = {**model_options, DIRECTION_KEY: sub}
            t = timestep[start:stop] if torch.is_tensor(timestep) and timestep.ndim and timestep.shape[0] == x.shape[0] \
                else timestep
            preds.append(g.predict_noise(x[start:stop], t, opts, seed))
            if sub is not None:
                unconds.append(sub.uncond)
                pins.update({start + f: lat for f, lat in sub.pins.items()})
        if request is not None:
            request.uncond = None if any(u is None for u in unconds) else fuse_windows(unconds, self.windows)
            request.pins = pins
        return fuse_windows(preds, self.windows)


setattr(SVDInbetweenChainGuider, ANSWERS_MARK, True)
