from __future__ import annotations

import torch
from comfy_api.latest import io

import nodes as comfy_nodes

from ..samplers.keyframes import RESIZE_MODES, augment, augmentation_noise, fit_image, svd_conds
from ..samplers.validation import fail
from .common import CATEGORY


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
                io.Image.Input("start_image", tooltip="First frame of the video."),
                io.Image.Input("end_image", tooltip="Last frame of the video."),
                io.Int.Input("width", default=1024, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                             tooltip="Video width in pixels (multiple of 8)."),
                io.Int.Input("height", default=576, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                             tooltip="Video height in pixels (multiple of 8)."),
                io.Int.Input("video_frames", default=25, min=3, max=4096,
                             tooltip="Frames in the video, keyframes included (25 for SVD-XT, 14 for SVD)."),
                io.Int.Input("motion_bucket_id", default=127, min=1, max=1023,
                             tooltip="SVD motion strength id; higher moves more."),
                io.Int.Input("fps", default=7, min=1, max=1024, tooltip="Frame-rate id given to SVD."),
                io.Float.Input("augmentation_level", default=0.02, min=0.0, max=10.0, step=0.01,
                               tooltip="Noise added to the keyframes before VAE encoding, in SVD's [-1, 1] "
                                       "pixel space (ComfyUI's stock node uses [0, 1], i.e. twice as strong)."),
                io.Combo.Input("resize", options=list(RESIZE_MODES), default="crop",
                               tooltip="crop: fill the frame, centre-crop (keeps aspect); stretch: distort to "
                                       "fit (the research code); pad: fit inside, grey borders."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the augmentation noise (one noise shared by both keyframes)."),
            ],
            outputs=[
                io.Conditioning.Output("positive_start", tooltip="Forward pass, conditioned on the start frame."),
                io.Conditioning.Output("negative_start", tooltip="Forward pass, unconditional."),
                io.Conditioning.Output("positive_end", tooltip="Backward pass, conditioned on the end frame."),
                io.Conditioning.Output("negative_end", tooltip="Backward pass, unconditional."),
                io.Latent.Output("latent", tooltip="Empty video latent of video_frames frames."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision, vae, start_image, end_image, width, height, video_frames, motion_bucket_id,
                fps, augmentation_level, resize="crop", noise_seed=0) -> io.NodeOutput:
        node = "SVDInbetweenConditioning"
        for name, img in (("start_image", start_image), ("end_image", end_image)):
            if img.ndim != 4 or img.shape[0] != 1:
                fail(node, name, f"expected one image, got a batch of shape {tuple(img.shape)}")
            if not torch.isfinite(img).all():
                fail(node, name, "contains NaN or Inf")
        if width % 8 or height % 8:
            fail(node, "width", f"width and height must be multiples of 8, got {width}x{height}")
        start = fit_image(start_image, width, height, resize)
        end = fit_image(end_image, width, height, resize)
        noise = augmentation_noise(start.shape, noise_seed)
        common = dict(motion_bucket_id=motion_bucket_id, fps=fps, augmentation_level=augmentation_level,
                      frames=video_frames)
        pos_s, neg_s = svd_conds(clip_vision, vae, start, augment(start, augmentation_level, noise), **common)
        pos_e, neg_e = svd_conds(clip_vision, vae, end, augment(end, augmentation_level, noise), **common)
        latent = torch.zeros([video_frames, 4, height // 8, width // 8])
        return io.NodeOutput(pos_s, neg_s, pos_e, neg_e, {"samples": latent})
