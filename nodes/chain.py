from __future__ import annotations

from comfy_api.latest import io

from ..samplers.chain import sample_chain
from .common import CATEGORY
from .inputs import guidance_inputs, keyframe_encoding_inputs, recurrence_inputs, scheduler_input, size_inputs


class SVDInbetweenChain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        g = guidance_inputs()
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
                *size_inputs(),
                io.String.Input("frames", default="25",
                                tooltip="Frames of each segment, both its keyframes included: one number for all "
                                        "segments, or one per segment separated by commas (e.g. 25,14,25). The "
                                        "video has their sum minus the shared keyframes."),
                *keyframe_encoding_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The one seed of the chain: initial noise, re-noising and keyframe "
                                     "augmentation noise."),
                io.Int.Input("steps", default=50, min=1, max=10000,
                             tooltip="Sampling steps (paper: 50 with recurrence; vibid modes: ~25)."),
                g["cfg"], g["mode"], *recurrence_inputs(), g["forward_weight"], g["execution"], scheduler_input(),
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
