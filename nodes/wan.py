"""Wan nodes: N keyframes as Wan I2V / FLF2V conditioning, and the decode back to exactly the clip's frames."""
from __future__ import annotations

import importlib.util

import torch
from comfy_api.latest import io

from ..conditioning.keyframes import fit_image
from ..samplers.request import FLOAT_BYTES, GIB, MAX_FRAMES, MAX_SIZE, MIN_SIZE, check_frames, check_size
from ..samplers.validation import check_choice, fail, labelled
from ..wan import anchor, pieces
from ..wan.layout import LAYOUTS, LayoutError, place
from .common import LPIPS_FOLDER, WAN_CATEGORY

I2V_CHANNELS = 36
LPIPS_CHUNK = 8  # frame pairs per LPIPS call: 81 pairs of 832x480 frames at once hold about a GB of AlexNet features
LAYOUT_HELP = ("separate: every keyframe in a latent frame of its own (Anchor Frame Bridging's layout, for the Wan "
               "I2V models: Wan2.1 I2V 480P/720P, Wan2.2 I2V A14B); frames = keyframes (mod 4), e.g. 82 for start + "
               "end, 83 with one anchor. inside: keyframes inside the 4-frame latents, as ComfyUI's "
               "WanFirstLastFrameToVideo (what the Wan2.1 FLF2V model was trained on); frames = 1 (mod 4), e.g. 81.")


def _check_images(images: list[tuple[str, torch.Tensor]], video: tuple[int, int] | None = None) -> None:
    """Finite IMAGE batches of one size: the first's, or (for an anchor cut from a decoded clip) the video's own
    (height, width), which the crop leaves as it is."""
    first_name, first = images[0]
    for name, img in images:
        if img.ndim != 4 or img.shape[0] < 1:
            fail(name, f"expected an IMAGE batch [B, H, W, C], got shape {tuple(img.shape)}")
        if not torch.isfinite(img).all():
            fail(name, "contains NaN or Inf")
        if img.shape[1:3] != first.shape[1:3] and tuple(img.shape[1:3]) != video:
            fail(name, f"is {img.shape[2]}x{img.shape[1]} but {first_name} is {first.shape[2]}x{first.shape[1]}: give "
                 f"every keyframe one size (ImageScale) so each is cropped the same way")


def _check_model(model) -> None:
    """An image-to-video Wan: WAN21 (Wan2.1 I2V / FLF2V, Wan2.2 I2V A14B) with 16 noise + 4 mask + 16 keyframe latent
    input channels. A text-to-video Wan (16 channels) would take the conds and silently ignore the keyframes."""
    import comfy.model_base
    base = getattr(model, "model", None)
    if not isinstance(base, comfy.model_base.WAN21):
        fail("model", f"expects a Wan image-to-video model (Wan2.1 I2V or FLF2V, Wan2.2 I2V A14B), got "
             f"{type(base if base is not None else model).__name__}")
    weight = getattr(getattr(base.diffusion_model, "patch_embedding", None), "weight", None)
    channels = weight.shape[1] if isinstance(weight, torch.Tensor) and weight.ndim == 5 else None
    if channels is not None and channels != I2V_CHANNELS:
        fail("model", f"takes {channels} input channels, but keyframes need an image-to-video Wan with {I2V_CHANNELS} "
             f"(16 noise + 4 mask + 16 keyframe latent); a text-to-video model would ignore them: load an I2V or "
             f"FLF2V model")


def _clip_vision(start, end):
    """The CLIP vision tokens, as WanFirstLastFrameToVideo and the AFB authors give them: start and end images'
    penultimate hidden states side by side."""
    if start is None or end is None:
        return start if end is None else end
    import comfy.clip_vision
    out = comfy.clip_vision.Output()
    out.penultimate_hidden_states = torch.cat([start.penultimate_hidden_states, end.penultimate_hidden_states], dim=-2)
    return out


def _check_fits(keyframes, width: int, height: int, batch: int) -> None:
    """What the node itself holds (float32 on the intermediate device) must fit that device: the grey keyframe clip,
    its conditioning latent and mask, and the empty latent. A shared server gets the error, not an out-of-memory
    kill."""
    import comfy.model_management as mm
    device = mm.intermediate_device()
    cells = keyframes.latent_frames * (height // 8) * (width // 8)
    need = (keyframes.frames * height * width * 3 + cells * (pieces.WAN21_LATENT_CHANNELS * (1 + batch) + 4)) * FLOAT_BYTES
    total = mm.get_total_memory(device)
    if need > total:
        fail("frames", f"a {width}x{height} video of {keyframes.frames} frames needs {need / GIB:.1f} GiB for its "
             f"keyframe clip and latents alone, more than this machine's {device} has in all ({total / GIB:.1f} GiB): "
             f"lower width, height or frames")


class SVDInbetweenWanKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenWanKeyframes",
            display_name="Wan Keyframes to Video",
            category=WAN_CATEGORY,
            description="Start, end and any anchor keyframes as Wan image-to-video conditioning, plus the empty "
                        "latent. Decode the sampled latent with Wan Keyframe Decode to get exactly `frames` frames.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="The text prompt (CLIPTextEncode with Wan's umt5)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (Wan2.2 A14B uses the same one)."),
                io.Image.Input("start_image", tooltip="The first frame (one image)."),
                io.Image.Input("end_image", tooltip="The last frame (one image, the start image's size)."),
                io.Int.Input("width", default=832, min=MIN_SIZE, max=MAX_SIZE, step=16,
                             tooltip="Video width; keyframes are scaled and centre-cropped to it, as by ComfyUI's "
                                     "Wan nodes."),
                io.Int.Input("height", default=480, min=MIN_SIZE, max=MAX_SIZE, step=16, tooltip="Video height."),
                io.Int.Input("frames", default=82, min=2, max=MAX_FRAMES,
                             tooltip="Frames in the video, keyframes included. " + LAYOUT_HELP),
                io.Combo.Input("layout", options=list(LAYOUTS), default="separate", tooltip=LAYOUT_HELP),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos per run."),
                io.Float.Input("start_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="How firmly the video holds the start image (1: exactly)."),
                io.Float.Input("end_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="How firmly the video holds the end image."),
                io.Float.Input("anchor_strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="How firmly the video holds each anchor image."),
                io.Int.Input("anchor_position", default=-1, min=-1, max=MAX_FRAMES,
                             tooltip="The frame of the one anchor image (Wan Anchor Frame's position output); in "
                                     "the separate layout it moves to the nearest frame 1 + 4k after the start. "
                                     "-1: anchors spread evenly."),
                io.Image.Input("anchor_image", optional=True,
                               tooltip="Keyframes between start and end, in time order (a batch): Wan Anchor "
                                       "Frame's anchor, or your own."),
                io.Model.Input("model", optional=True,
                               tooltip="The Wan model you sample with: checked before anything runs to be an "
                                       "image-to-video Wan (a text-to-video one would ignore the keyframes)."),
                io.ClipVisionOutput.Input("clip_vision_start_image", optional=True,
                                          tooltip="CLIP vision of the start image (the I2V and FLF2V models use it)."),
                io.ClipVisionOutput.Input("clip_vision_end_image", optional=True,
                                          tooltip="CLIP vision of the end image; given with the start's, both go in "
                                                  "side by side, as WanFirstLastFrameToVideo and the AFB authors do."),
            ],
            outputs=[
                io.Conditioning.Output("positive_out", display_name="positive"),
                io.Conditioning.Output("negative_out", display_name="negative"),
                io.Latent.Output("latent", tooltip="The empty video latent; it remembers where the keyframes are."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, vae, start_image, end_image, width, height, frames, layout, batch_size,
                start_strength, end_strength, anchor_strength, anchor_position=-1, anchor_image=None,
                clip_vision_start_image=None, clip_vision_end_image=None, model=None) -> io.NodeOutput:
        import node_helpers
        with labelled("SVDInbetweenWanKeyframes"):
            check_choice("layout", layout, LAYOUTS)
            named = [("start_image", start_image), ("end_image", end_image)]
            if anchor_image is not None:
                named.append(("anchor_image", anchor_image))
            _check_images(named, (height, width))
            if model is not None:
                _check_model(model)
            if not pieces.is_wan21_vae(vae):
                fail("vae", f"expects the Wan 2.1 VAE (16 latent channels, 4 frames per latent frame), got one with "
                     f"{getattr(vae, 'latent_channels', '?')} channels; load wan_2.1_vae.safetensors")
            check_size(width, height)
            if width % 16 or height % 16:
                fail("width" if width % 16 else "height", f"Wan needs multiples of 16, got {width}x{height}")
            check_frames("frames", frames)
            for name, value in (("start_strength", start_strength), ("end_strength", end_strength),
                                ("anchor_strength", anchor_strength)):
                if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                    fail(name, f"must be a number in [0, 1] (1: the keyframe exactly), got {value!r}")
            if not 1 <= batch_size <= 64:
                fail("batch_size", f"must be in [1, 64], got {batch_size}")
            anchors = anchor_image.shape[0] if anchor_image is not None else 0
            if anchor_position < -1:
                fail("anchor_position", f"is a frame number, or -1 to spread the anchors evenly; got {anchor_position}")
            if anchor_position >= 0 and anchors != 1:
                fail("anchor_position", f"places one anchor image, but anchor_image holds {anchors}; set -1 to "
                     f"spread them evenly")
            try:
                keyframes = place(layout, frames, anchors + 2, (anchor_position,) if anchor_position >= 0 else None,
                                  "SVDInbetweenWanKeyframes")
            except LayoutError as e:
                fail(e.input_name, e.message)
            _check_fits(keyframes, width, height, batch_size)
        images = [start_image[:1]] + ([anchor_image] if anchors else []) + [end_image[-1:]]
        images = torch.cat([fit_image(i, width, height, "crop") for i in images])  # as ComfyUI's Wan nodes crop
        strengths = (start_strength,) + (anchor_strength,) * anchors + (end_strength,)
        import comfy.model_management
        latent = torch.zeros([batch_size, pieces.WAN21_LATENT_CHANNELS, keyframes.latent_frames, height // 8,
                              width // 8], device=comfy.model_management.intermediate_device())
        values = {"concat_latent_image": pieces.encode(vae, keyframes, images),
                  "concat_mask": pieces.concat_mask(keyframes, strengths, height // 8, width // 8)}
        clip = _clip_vision(clip_vision_start_image, clip_vision_end_image)
        if clip is not None:
            values["clip_vision_output"] = clip
        positive = node_helpers.conditioning_set_values(positive, values)
        negative = node_helpers.conditioning_set_values(negative, values)
        return io.NodeOutput(positive, negative,
                             {"samples": latent, pieces.LAYOUT_KEY: pieces.layout_record(keyframes)})


class SVDInbetweenWanDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenWanDecode",
            display_name="Wan Keyframe Decode",
            category=WAN_CATEGORY,
            description="Decodes a Wan latent to frames. A latent from Wan Keyframes to Video comes back as exactly "
                        "its `frames` frames with every keyframe at its place (each keyframe's piece decoded on its "
                        "own); any other Wan latent decodes as VAEDecode does.",
            inputs=[
                io.Latent.Input("samples", tooltip="The sampled latent."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
            ],
            outputs=[io.Image.Output("images", display_name="IMAGE", tooltip="The video's frames.")],
        )

    @classmethod
    def execute(cls, samples, vae) -> io.NodeOutput:
        record = samples.get(pieces.LAYOUT_KEY)
        layout = pieces.layout_from_record(record) if record else None
        with labelled("SVDInbetweenWanDecode"):
            latent = samples["samples"]
            if latent.ndim != 5:
                fail("samples", f"expected a video latent [B, C, T, H, W], got shape {tuple(latent.shape)}")
            if layout is not None and latent.shape[2] != layout.latent_frames:
                fail("samples", f"has {latent.shape[2]} latent frames, but its keyframe layout needs "
                     f"{layout.latent_frames}; decode the latent that came from Wan Keyframes to Video")
        return io.NodeOutput(pieces.decode(vae, latent, layout))


def lpips_distance(net: str):
    """The pack's one LPIPS (evaluation/features.py), its backbone file read from ComfyUI/models/lpips/."""
    import comfy.model_management
    import folder_paths

    from ..evaluation.features import LPIPS_BACKBONES, LpipsDistance
    if importlib.util.find_spec("lpips") is None:
        fail("lpips_net", "LPIPS needs the Python package 'lpips' (its linear heads ship in it): pip install lpips "
             "into ComfyUI's Python, or reinstall the pack's requirements.txt")
    spec = LPIPS_BACKBONES[net]
    path = folder_paths.get_full_path(LPIPS_FOLDER, spec.filename)
    if path is None:
        fail("lpips_net", f"LPIPS ({net}) needs {spec.what}: put {spec.filename} (from {spec.url}) in "
             f"ComfyUI/models/{LPIPS_FOLDER}/ and run again; the pack never downloads")
    lpips = LpipsDistance(net, path, device=str(comfy.model_management.get_torch_device()))

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([lpips(a[i:i + LPIPS_CHUNK], b[i:i + LPIPS_CHUNK]) for i in range(0, a.shape[0], LPIPS_CHUNK)])
    return distance


class SVDInbetweenWanAnchor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenWanAnchor",
            display_name="Wan Anchor Frame (AFB)",
            category=WAN_CATEGORY,
            description="Anchor Frame Bridging's anchor: finds the forward clip's breakpoint (the frame least like "
                        "its neighbours by LPIPS) and takes the anchor from the reverse clip (generated from end to "
                        "start) at the mirrored moment. Feed anchor and position to Wan Keyframes to Video.",
            inputs=[
                io.Image.Input("forward_video", tooltip="The clip generated from start to end."),
                io.Image.Input("reverse_video", tooltip="The clip generated from end to start (start and end images "
                                                        "swapped; a reverse prompt), at least as long."),
                io.Int.Input("edge_frames", default=1, min=1, max=MAX_FRAMES,
                             tooltip="The breakpoint is searched this many frames away from either end (1: every "
                                     "frame but the keyframes)."),
                io.Combo.Input("lpips_net", options=["alex", "vgg"], default="alex",
                               tooltip="LPIPS backbone; its torchvision ImageNet file goes in models/lpips/."),
            ],
            outputs=[
                io.Image.Output("anchor", tooltip="The reverse clip's frame at the mirrored position."),
                io.Int.Output("position", tooltip="The breakpoint's frame in the forward clip: where the anchor "
                                                  "goes."),
                io.String.Output("scores", tooltip="Each forward frame's mean LPIPS to its neighbours, "
                                                   "comma-separated, to plot."),
            ],
        )

    @classmethod
    def execute(cls, forward_video, reverse_video, edge_frames, lpips_net) -> io.NodeOutput:
        with labelled("SVDInbetweenWanAnchor"):
            check_choice("lpips_net", lpips_net, ["alex", "vgg"])
            _check_images([("forward_video", forward_video), ("reverse_video", reverse_video)])
            frames = forward_video.shape[0]
            if reverse_video.shape[0] < frames:
                fail("reverse_video", f"has {reverse_video.shape[0]} frames, fewer than forward_video's {frames}: "
                     f"generate the reverse clip at the forward clip's length")
            if edge_frames < 1:
                fail("edge_frames", f"must be at least 1 (a keyframe is never the breakpoint), got {edge_frames}")
            if frames < 2 * edge_frames + 1:
                fail("edge_frames", f"{edge_frames} leaves no frame to search in a {frames}-frame forward_video")
            distance = lpips_distance(lpips_net)
        image, position, scores = anchor.pick_anchor(forward_video[..., :3], reverse_video, distance, edge_frames)
        return io.NodeOutput(image, position, ", ".join(f"{s:.6f}" for s in scores.tolist()))
