"""The Wan templates and blueprint (docs/wan.md), as API graphs; tools/build_workflows.py writes them with the SVD ones.

- wan_afb: Anchor Frame Bridging at the authors' settings (Wan2.1 I2V 14B 480P, 832x480, 50 steps, cfg 5, euler,
  sigma shift 5 = ComfyUI's `simple` under ModelSamplingSD3 shift 5): a forward pass, a reverse pass (images and CLIP
  visions swapped, the reverse prompt; stoppable early with SplitSigmas), the anchor from both, and a third pass
  through start, anchor and end.
- wan_flf: the native baseline, ComfyUI's WanFirstLastFrameToVideo with the FLF2V model at the same settings.
- wan_keyframes: four keyframes (start, two middle images batched as anchors, end) through one Wan I2V pass.
The keyframes are scaled to the video size first (ImageScale, as Wan Keyframes to Video fits them), except in wan_flf,
ComfyUI's own graph.

Node ids follow the SVD templates where a role is shared: 1 the model loader, 2/3 the start/end images, 5 the
conditioning of the video that is saved, 6 its sampler, 7 its decode, 8 CreateVideo, 9 SaveVideo (prefix by build()).
"""
from __future__ import annotations

from svd_inbetween.evaluation.features import LPIPS_BACKBONES  # build_workflows imports this checkout as the pack

I2V = "wan2.1_i2v_480p_14B_fp16.safetensors"
FLF2V = "wan2.1_flf2v_720p_14B_fp16.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
LPIPS_ALEX = LPIPS_BACKBONES["alex"]  # the backbone Wan Anchor Frame's default lpips_net reads
WIDTH, HEIGHT = 832, 480  # the authors' 480P size
STEPS, CFG, SHIFT, FPS = 50, 5.0, 5.0, 16.0
SEED = 42
# the authors' frame counts: separate layout, frames = keyframes (mod 4) (docs/wan.md)
FRAMES = {2: 82, 3: 83, 4: 84}
FLF_FRAMES = 81  # inside layout (WanFirstLastFrameToVideo): 1 (mod 4)
PROMPT = "a smooth, continuous shot from the first frame to the last"
REVERSE_PROMPT = "the same shot played backwards, from the last frame to the first"
NEGATIVE = ("static, blurry, low quality, jpeg artifacts, flicker, deformed, morphing, extra limbs, text, watermark, "
            "abrupt cut")

_REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
# node properties.models (the frontend's missing-models list); where a loader class has several entries,
# build_workflows.model_properties keeps the one its node loads
MODEL_SOURCES = {
    "UNETLoader": [{"name": n, "directory": "diffusion_models", "url": _REPACKAGED + "diffusion_models/" + n}
                   for n in (I2V, FLF2V)],
    "CLIPLoader": [{"name": TEXT_ENCODER, "directory": "text_encoders",
                    "url": _REPACKAGED + "text_encoders/" + TEXT_ENCODER}],
    "VAELoader": [{"name": WAN_VAE, "directory": "vae", "url": _REPACKAGED + "vae/" + WAN_VAE}],
    "CLIPVisionLoader": [{"name": CLIP_VISION, "directory": "clip_vision",
                          "url": _REPACKAGED + "clip_vision/" + CLIP_VISION}],
    # the LPIPS backbone Wan Anchor Frame reads from models/lpips/ (torchvision's ImageNet AlexNet)
    "SVDInbetweenWanAnchor": [{"name": LPIPS_ALEX.filename, "directory": "lpips", "url": LPIPS_ALEX.url}],
}


def image(name: str, title: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}, "_meta": {"title": title}}


def text(prompt: str, title: str) -> dict:
    return {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["10", 0]}, "_meta": {"title": title}}


def scale(images) -> dict:
    """To the video size as Wan Keyframes to Video fits a keyframe (bilinear, centre crop): the anchor comes back from
    the reverse clip at the video size, and every keyframe of one run must have one size."""
    return {"class_type": "ImageScale", "inputs": {"image": images, "upscale_method": "bilinear", "width": WIDTH,
                                                   "height": HEIGHT, "crop": "center"}}


def loaders(unet: str, scaled: bool = True) -> dict:
    """Model, images (40/41: scaled to the video size, where `scaled`), text encoder and prompts, VAE, CLIP vision of
    the start and end images."""
    start, end = (["40", 0], ["41", 0]) if scaled else (["2", 0], ["3", 0])
    g = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": image("start.png", "Start frame"),
        "3": image("end.png", "End frame"),
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": SHIFT}},
        "10": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "wan", "device": "default"}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": WAN_VAE}},
        "12": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION}},
        "13": text(PROMPT, "Prompt"),
        "14": text(NEGATIVE, "Negative prompt"),
        "15": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["12", 0], "image": start, "crop": "none"}},
        "16": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["12", 0], "image": end, "crop": "none"}},
    }
    if scaled:
        g["40"], g["41"] = scale(["2", 0]), scale(["3", 0])
    return g


START, END = ["40", 0], ["41", 0]


def keyframes_node(positive, start, end, clip_start, clip_end, frames: int, anchor=None, position=-1) -> dict:
    inputs = {"positive": positive, "negative": ["14", 0], "vae": ["11", 0], "start_image": start, "end_image": end,
              "width": WIDTH, "height": HEIGHT, "frames": frames, "layout": "separate", "batch_size": 1,
              "start_strength": 1.0, "end_strength": 1.0, "anchor_strength": 1.0, "anchor_position": position,
              "clip_vision_start_image": clip_start, "clip_vision_end_image": clip_end, "model": ["4", 0]}
    if anchor is not None:
        inputs["anchor_image"] = anchor
    return {"class_type": "SVDInbetweenWanKeyframes", "inputs": inputs}


def ksampler(conditioning: str) -> dict:
    """The authors' sampler: 50 euler steps at cfg 5 on the `simple` sigmas (shift 5 from node 4)."""
    return {"class_type": "KSampler", "inputs": {
        "model": ["4", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler", "scheduler": "simple",
        "positive": [conditioning, 0], "negative": [conditioning, 1], "latent_image": [conditioning, 2],
        "denoise": 1.0}}


def decode(samples) -> dict:
    return {"class_type": "SVDInbetweenWanDecode", "inputs": {"samples": samples, "vae": ["11", 0]}}


def video_out(images) -> dict:
    return {"8": {"class_type": "CreateVideo", "inputs": {"images": images, "fps": FPS}},
            "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": None,
                                                        "format": "auto", "codec": "auto"}}}


def wan_afb() -> dict:
    """Anchor Frame Bridging: forward (20-22), reverse (23-30), anchor (31), then start + anchor + end (5-9)."""
    g = loaders(I2V)
    g["17"] = text(REVERSE_PROMPT, "Reverse prompt: the motion described backwards")
    g["20"] = keyframes_node(["13", 0], START, END, ["15", 0], ["16", 0], FRAMES[2])
    g["20"]["_meta"] = {"title": "Pass 1: forward keyframes"}
    g["21"] = ksampler("20")
    g["22"] = decode(["21", 0])
    g["23"] = keyframes_node(["17", 0], END, START, ["16", 0], ["15", 0], FRAMES[2])
    g["23"]["_meta"] = {"title": "Pass 2: reverse keyframes (end to start)"}
    g["24"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "simple", "steps": STEPS,
                                                          "denoise": 1.0}}
    g["25"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["24", 0], "step": STEPS},
               "_meta": {"title": "Stop the reverse pass early: set step to K, e.g. 15"}}
    g["26"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}}
    g["27"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["23", 0],
                                                     "negative": ["23", 1], "cfg": CFG}}
    g["28"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    g["29"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["26", 0], "guider": ["27", 0], "sampler": ["28", 0], "sigmas": ["25", 0], "latent_image": ["23", 2]}}
    g["30"] = decode(["29", 1])  # denoised_output: the clean-video prediction of the last step run
    g["31"] = {"class_type": "SVDInbetweenWanAnchor", "inputs": {"forward_video": ["22", 0],
                                                                 "reverse_video": ["30", 0], "edge_frames": 1,
                                                                 "lpips_net": "alex"}}
    g["5"] = keyframes_node(["13", 0], START, END, ["15", 0], ["16", 0], FRAMES[3], anchor=["31", 0],
                            position=["31", 1])
    g["5"]["_meta"] = {"title": "Pass 3: start, anchor, end"}
    g["6"] = ksampler("5")
    g["7"] = decode(["6", 0])
    g.update(video_out(["7", 0]))
    return g


def wan_flf() -> dict:
    """The native baseline: WanFirstLastFrameToVideo with the FLF2V model, same size and sampler settings."""
    g = loaders(FLF2V, scaled=False)
    g["5"] = {"class_type": "WanFirstLastFrameToVideo", "inputs": {
        "positive": ["13", 0], "negative": ["14", 0], "vae": ["11", 0], "width": WIDTH, "height": HEIGHT,
        "length": FLF_FRAMES, "batch_size": 1, "clip_vision_start_image": ["15", 0],
        "clip_vision_end_image": ["16", 0], "start_image": ["2", 0], "end_image": ["3", 0]}}
    g["6"] = ksampler("5")
    g["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["11", 0]}}
    g.update(video_out(["7", 0]))
    return g


def wan_keyframes() -> dict:
    """Four keyframes, one Wan I2V pass: the two middle images (batched, in time order) spread evenly."""
    g = loaders(I2V)
    g["18"] = image("keyframe_2.png", "Keyframe 2")
    g["19"] = image("keyframe_3.png", "Keyframe 3")
    g["32"] = {"class_type": "ImageBatch", "inputs": {"image1": ["18", 0], "image2": ["19", 0]},
               "_meta": {"title": "Middle keyframes, in time order"}}
    g["33"] = scale(["32", 0])
    g["5"] = keyframes_node(["13", 0], START, END, ["15", 0], ["16", 0], FRAMES[4], anchor=["33", 0])
    g["6"] = ksampler("5")
    g["7"] = decode(["6", 0])
    g.update(video_out(["7", 0]))
    return g


WORKFLOWS = {"wan_afb": wan_afb, "wan_flf": wan_flf, "wan_keyframes": wan_keyframes}

# one exposed widget may drive several inner nodes: (exposed name, [(node, widget), ...])
BLUEPRINTS = {
    "Keyframes to Video (Wan, Anchor Frame Bridging)": {
        "template": "wan_afb",
        "category": "Inbetween/Wan",
        "images": {"start_image": [("40", "image")], "end_image": [("41", "image")]},
        "widgets": [("prompt", [("13", "text")]), ("reverse_prompt", [("17", "text")]),
                    ("seed", [("6", "seed"), ("21", "seed"), ("26", "noise_seed")]),
                    ("steps", [("6", "steps"), ("21", "steps"), ("24", "steps")]),
                    ("unet_name", [("1", "unet_name")]),
                    ("width", [("5", "width"), ("20", "width"), ("23", "width"), ("40", "width"), ("41", "width")]),
                    ("height", [("5", "height"), ("20", "height"), ("23", "height"), ("40", "height"),
                                ("41", "height")]),
                    ("reverse_stop_step", [("25", "step")])],
        "description": "Anchor Frame Bridging on Wan2.1 I2V: a forward and a reverse pass from the start and end "
                       "images, the anchor where the forward clip breaks, and a third pass through start, anchor "
                       "and end (the wan_afb template as one node; docs/wan.md).",
    },
}
