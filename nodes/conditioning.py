from __future__ import annotations

import torch
from comfy_api.latest import io

from ..conditioning.keyframes import KeyframeEncoding, empty_video_latent, encode_keyframes
from ..samplers.request import MAX_FRAMES, check_video
from ..samplers.validation import fail, labelled
from .common import CATEGORY
from .inputs import keyframe_encoding_inputs, size_inputs


class SVDInbetweenConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenConditioning",
            display_name="SVD Inbetween Conditioning",
            category=CATEGORY,
            description="Encodes a start and an end keyframe as SVD conditioning for the forward (start) and "
                        "backward (end) passes, and makes the empty video latent.",
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="The SVD checkpoint's CLIP vision model."),
                io.Vae.Input("vae", tooltip="The SVD checkpoint's VAE."),
                io.Image.Input("start_image", tooltip="The first frame of the video (one image, any size)."),
                io.Image.Input("end_image", tooltip="The last frame of the video (one image, any size)."),
                *size_inputs(),
                # shown as `frames` and `seed`, the chain's and the sampler's names; the ids stay (API prompts)
                io.Int.Input("video_frames", display_name="frames", default=25, min=3, max=MAX_FRAMES,
                             tooltip="Frames in the video, keyframes included: 25 for SVD-XT, 14 for SVD. More frames give "
                                     "slower motion and take longer."),
                *keyframe_encoding_inputs(),
                io.Int.Input("noise_seed", display_name="seed", default=0, min=0, max=0xffffffffffffffff,
                             control_after_generate=True,
                             tooltip="Seed of the keyframe noise (augmentation_level); change it for another variant."),
            ],
            outputs=[
                io.Conditioning.Output("positive_start", tooltip="Forward pass, conditioned on the start frame."),
                io.Conditioning.Output("negative_start", tooltip="Forward pass, unconditional."),
                io.Conditioning.Output("positive_end", tooltip="Backward pass, conditioned on the end frame."),
                io.Conditioning.Output("negative_end", tooltip="Backward pass, unconditional."),
                io.Latent.Output("latent", tooltip="Empty video latent of `frames` frames."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision, vae, start_image, end_image, width, height, video_frames, motion_bucket_id,
                fps, augmentation_level, resize="crop", noise_seed=0) -> io.NodeOutput:
        with labelled("SVDInbetweenConditioning"):
            for name, img in (("start_image", start_image), ("end_image", end_image)):
                if img.ndim != 4 or img.shape[0] != 1:
                    fail(name, f"expected one image, got a batch of shape {tuple(img.shape)}")
                if not torch.isfinite(img).all():
                    fail(name, "contains NaN or Inf")
            encoding = KeyframeEncoding(width, height, motion_bucket_id, fps, augmentation_level, resize)
            check_video(encoding, "video_frames", video_frames, [("start_image", start_image[0]),
                                                                 ("end_image", end_image[0])], vae)
        _, ((pos_s, neg_s), (pos_e, neg_e)) = encode_keyframes(clip_vision, vae, [start_image, end_image], encoding,
                                                               noise_seed, video_frames)
        return io.NodeOutput(pos_s, neg_s, pos_e, neg_e,
                             {"samples": empty_video_latent(video_frames, width, height)})
