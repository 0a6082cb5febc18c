from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

import nodes as comfy_nodes

from ..attention_patch.layers import MODES
from ..samplers.chain import sample_chain
from ..samplers.execution import EXECUTIONS
from ..samplers.keyframes import RESIZE_MODES
from .common import CATEGORY
from .sampler import MODE_TOOLTIP


class SVDInbetweenChain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenChain",
            display_name="SVD Inbetween Keyframe Chain",
            category=CATEGORY,
            description="N keyframes -> one video of N-1 inbetween segments, each keyframe exactly at its segment "
                        "boundary, no repeated frames. The segments are sampled together (one seed, one noise, "
                        "one progress bar); neighbours share and jointly denoise their keyframe frame. A loop is "
                        "the batch A, B, A. With two keyframes it equals SVDInbetweenConditioning "
                        "(noise_seed = seed) + SVDInbetweenSampler.",
            inputs=[
                io.Model.Input("model", tooltip="SVD model; for modes gi and vibid_gi, from "
                                                "SVDInbetweenLoadBackwardWeights."),
                io.ClipVision.Input("clip_vision", tooltip="The SVD checkpoint's CLIP vision model."),
                io.Vae.Input("vae", tooltip="The SVD checkpoint's VAE (encodes the keyframes, decodes the video)."),
                io.Image.Input("images", tooltip="The keyframes in order, as one IMAGE batch (at least 2; join "
                                                 "single images with ImageBatch). A, B, A makes a loop."),
                io.Int.Input("width", default=1024, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                             tooltip="Video width in pixels (multiple of 8)."),
                io.Int.Input("height", default=576, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                             tooltip="Video height in pixels (multiple of 8)."),
                io.String.Input("frames", default="25",
                                tooltip="Frames of each segment, both its keyframes included: one number for all "
                                        "segments, or one per segment separated by commas (e.g. 25,14,25). The "
                                        "video has their sum minus the shared keyframes."),
                io.Int.Input("motion_bucket_id", default=127, min=1, max=1023,
                             tooltip="SVD motion strength id; higher moves more."),
                io.Int.Input("fps", default=7, min=1, max=1024, tooltip="Frame-rate id given to SVD."),
                io.Float.Input("augmentation_level", default=0.02, min=0.0, max=10.0, step=0.01,
                               tooltip="Noise added to the keyframes before VAE encoding, in SVD's [-1, 1] pixel "
                                       "space (as SVDInbetweenConditioning)."),
                io.Combo.Input("resize", options=list(RESIZE_MODES), default="crop",
                               tooltip="crop: fill the frame, centre-crop; stretch: distort to fit; pad: fit "
                                       "inside, grey borders."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The one seed of the chain: initial noise, re-noising and keyframe "
                                     "augmentation noise."),
                io.Int.Input("steps", default=50, min=1, max=10000,
                             tooltip="Sampling steps (paper: 50 with recurrence; vibid modes: ~25)."),
                io.Float.Input("cfg", default=2.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance scale of each direction (vibid modes: ~1.0)."),
                io.Combo.Input("mode", options=list(MODES), default="gi", tooltip=MODE_TOOLTIP),
                io.Int.Input("recurrence", default=5, min=0, max=100,
                             tooltip="Extra passes per early step after re-noising (paper: 5). Not used by vibid."),
                io.Float.Input("recurrence_ratio", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the steps that get the extra passes. Not used by vibid."),
                io.Float.Input("forward_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Weight of the forward prediction in each segment's fusion. Not used by "
                                       "vibid."),
                io.Combo.Input("execution", options=list(EXECUTIONS), default="auto",
                               tooltip="batched: both directions of a segment in one UNet call; sequential: two "
                                       "calls, less memory; auto: batched if it fits."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="karras",
                               optional=True, tooltip="Sigma schedule; SVD uses karras."),
                io.Boolean.Input("cfg_pp", default=True, optional=True,
                                 tooltip="vibid modes: CFG++ (step along the unconditional prediction)."),
                io.Boolean.Input("dds", default=True, optional=True,
                                 tooltip="vibid modes: pin each half-step's far keyframe frames to the keyframes."),
            ],
            outputs=[
                io.Image.Output("images_out", display_name="IMAGE",
                                tooltip="The decoded video; each keyframe is exactly its input image (resized)."),
                io.Latent.Output("latent", tooltip="The sampled video latent (boundary frames as sampled)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip_vision, vae, images, width, height, frames, motion_bucket_id, fps,
                augmentation_level, resize, seed, steps, cfg, mode, recurrence, recurrence_ratio, forward_weight,
                execution, scheduler="karras", cfg_pp=True, dds=True) -> io.NodeOutput:
        pixels, latent = sample_chain(
            "SVDInbetweenChain", model, clip_vision, vae, images, width, height, frames, motion_bucket_id, fps,
            augmentation_level, resize, seed, steps, cfg, mode, recurrence, recurrence_ratio, forward_weight,
            execution, scheduler, cfg_pp, dds)
        return io.NodeOutput(pixels, latent)
