from __future__ import annotations

import torch
from comfy_api.latest import io

from ..conditioning.keyframes import KeyframeEncoding, fit_image
from ..samplers.chain import check_request, sample_chain
from ..samplers.settings import GenerationSettings
from ..samplers.validation import fail, labelled
from .common import CATEGORY
from .inputs import (guidance_inputs, keyframe_encoding_inputs, recurrence_inputs, scheduler_input, size_inputs,
                     steps_input)


NODE_ID = "SVDInbetweenChain"
# Single keyframe sockets, so a chain needs no batching node (ImageBatch is deprecated on ComfyUI 0.33,
# and BatchImagesNode, which replaces it, does not exist on 0.3.64).
KEYFRAME_INPUTS = tuple(f"keyframe_{i}" for i in range(1, 7))


def keyframe_inputs() -> list[io.Image.Input]:
    first = ("The first keyframe (the video starts on it). Connect keyframe_1, keyframe_2, ... in order (at "
             "least 2; A, B, A - the first image again last - makes a loop), or give all keyframes as one batch in "
             "images.")
    return [io.Image.Input(name, optional=True,
                           tooltip=first if i == 0 else f"Keyframe {i + 1} of the chain (optional after keyframe_2; "
                                                        "unconnected ones are skipped).")
            for i, name in enumerate(KEYFRAME_INPUTS)]


def gather_keyframes(images, keyframes: dict, width: int, height: int, resize: str, frames: str | int):
    """One IMAGE batch from either `images` or the connected keyframe_N inputs, in order of N.

    Keyframes of different sizes are first fitted to the video size the way the chain fits every
    keyframe (fitting an image already at that size changes nothing), so they can be batched.
    """
    unknown = sorted(set(keyframes) - set(KEYFRAME_INPUTS))
    if unknown:
        raise TypeError(f"{NODE_ID}: unexpected inputs {unknown}")
    given = [(name, keyframes[name]) for name in KEYFRAME_INPUTS if keyframes.get(name) is not None]
    if images is not None and given:
        fail(given[0][0], "connect the keyframes either as one batch in 'images' or one by one in "
             "keyframe_1, keyframe_2, ..., not both")
    if images is not None:
        return images
    if not given:
        fail("keyframe_1", "no keyframes: connect keyframe_1 and keyframe_2 (and more in order), or one "
             "IMAGE batch of all keyframes to 'images'")
    for name, image in given:
        if not torch.is_tensor(image) or image.ndim != 4:
            fail(name, "expected an IMAGE")
    if sum(image.shape[0] for _, image in given) < 2:
        fail(given[0][0], f"only {given[0][0]} is connected; a chain needs at least 2 keyframes (connect "
             "keyframe_2 as well; a loop is keyframe_1 = A, keyframe_2 = B, keyframe_3 = A)")
    shapes = {tuple(image.shape[1:]) for _, image in given}
    parts = [image for _, image in given]
    if len(shapes) > 1:  # fitting makes width x height images: the request is checked first
        check_request([(name, one) for name, image in given for one in image], KeyframeEncoding(width, height,
                                                                                             resize=resize), frames)
        parts = [fit_image(image, width, height, resize) for image in parts]
    return torch.cat(parts)


class SVDInbetweenChain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        g = guidance_inputs()
        return io.Schema(
            node_id=NODE_ID,
            display_name="SVD Inbetween Chain",
            category=CATEGORY,
            description="N keyframes -> one video of N-1 inbetween segments, each keyframe exactly at its segment "
                        "boundary, no repeated frames. The segments are sampled together (one seed, one noise, "
                        "one progress bar); neighbours share and jointly denoise their keyframe frame. Keyframes "
                        "come one per keyframe_N input or as one IMAGE batch; a loop is A, B, A. With two "
                        "keyframes it equals SVDInbetweenConditioning (noise_seed = seed) + SVDInbetweenSampler.",
            inputs=[
                io.Model.Input("model", tooltip="SVD model; for modes gi, vibid_gi and mpd_gi, from "
                                                "SVDInbetweenLoadBackwardWeights."),
                io.ClipVision.Input("clip_vision", tooltip="The SVD checkpoint's CLIP vision model."),
                io.Vae.Input("vae", tooltip="The SVD checkpoint's VAE (encodes the keyframes, decodes the video)."),
                io.Image.Input("images", optional=True,
                               tooltip="The keyframes in order as one IMAGE batch (at least 2). Or leave it "
                                       "unconnected and connect keyframe_1, keyframe_2, ... instead."),
                *size_inputs(),
                io.String.Input("frames", default="25",
                                tooltip="Frames of each segment, both its keyframes included: one number for all "
                                        "segments, or one per segment separated by commas (e.g. 25,14,25). The "
                                        "video has their sum minus the shared keyframes."),
                *keyframe_encoding_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The one seed of the chain: initial noise, re-noising and keyframe "
                                     "augmentation noise."),
                steps_input(),
                g["cfg"], g["mode"], *recurrence_inputs(), g["forward_weight"], g["execution"], scheduler_input(),
                io.Boolean.Input("cfg_pp", default=True, optional=True,
                                 tooltip="vibid and mpd modes: CFG++ (step along the unconditional prediction)."),
                io.Boolean.Input("dds", default=True, optional=True,
                                 tooltip="vibid and mpd modes: pin each half-step's far keyframe frames to the keyframes."),
                *keyframe_inputs(),
            ],
            outputs=[
                io.Image.Output("images_out", display_name="IMAGE",
                                tooltip="The decoded video; each keyframe is exactly its input image (resized)."),
                io.Latent.Output("latent", tooltip="The sampled video latent (boundary frames as sampled)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip_vision, vae, images=None, *, width, height, frames, motion_bucket_id, fps,
                augmentation_level, resize, seed, steps, cfg, mode, recurrence, recurrence_ratio, forward_weight,
                execution, scheduler="karras", cfg_pp=True, dds=True, **keyframes) -> io.NodeOutput:
        with labelled(NODE_ID):
            images = gather_keyframes(images, keyframes, width, height, resize, frames)
        encoding = KeyframeEncoding(width, height, motion_bucket_id, fps, augmentation_level, resize)
        settings = GenerationSettings(seed=seed, steps=steps, cfg=cfg, mode=mode, recurrence=recurrence,
                                      recurrence_ratio=recurrence_ratio, forward_weight=forward_weight,
                                      execution=execution, scheduler=scheduler, cfg_pp=cfg_pp, dds=dds)
        pixels, latent = sample_chain(NODE_ID, model, clip_vision, vae, images, encoding, frames, settings)
        return io.NodeOutput(pixels, latent)
