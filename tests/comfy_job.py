"""Runs in a subprocess: a ComfySession over a temp base directory with tiny models.

Usage: python comfy_job.py JOB.json  -> prints one JSON line (prefixed RESULT:) with what
the job produced. Jobs:
  workflows: run every shipped API workflow with the tiny models swapped in; with "before": a folder, its API
             workflows too (the files shipped before a rename), under result key "before".
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from host import setup_comfy  # noqa: E402

TINY = dict(width=64, height=64, frames=5, steps=2, recurrence=1)
# the Wan templates' loaders -> the tiny pack's tiny Wan nodes (tests/tiny_wan.py), keeping the file-name input
TINY_WAN_LOADERS = {"UNETLoader": ("SVDInbetweenTestTinyWanModel", "unet_name"),
                    "VAELoader": ("SVDInbetweenTestTinyWanVAE", "vae_name"),
                    "CLIPVisionLoader": ("SVDInbetweenTestTinyWanClipVision", "clip_name")}
WAN_INSIDE_FRAMES = 9  # inside layout / WanFirstLastFrameToVideo: 1 (mod 4)
# the middle keyframes of the wan_keyframes template, written by prepare_base beside start.png and end.png
INPUT_IMAGES = ("start.png", "end.png", "keyframe_2.png", "keyframe_3.png")


def tiny_wan_frames(frames: int, layout: str) -> int:
    """The fewest frames that fit the same keyframes: separate 6 / 7 / 8 for 2 / 3 / 4 keyframes (frames =
    keyframes mod 4, so the shipped 82 / 83 / 84 say how many), inside 9."""
    if layout != "separate":
        return WAN_INSIDE_FRAMES
    return (frames % 4 or 4) + 4


def tiny_prompt(api: dict, weights_name: str, film: str | None = None) -> dict:
    """A shipped API workflow with tiny models, tiny sizes and few steps."""
    p = json.loads(json.dumps(api))
    for nid in [nid for nid, n in p.items() if n["class_type"] == "CLIPLoader"]:
        del p[nid]  # its CLIPTextEncode nodes become seeded random text conditioning
    for node in p.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct in TINY_WAN_LOADERS:
            tiny, name = TINY_WAN_LOADERS[ct]
            node["class_type"], node["inputs"] = tiny, {name: inputs[name]}
        elif ct == "CLIPTextEncode":
            node["class_type"], node["inputs"] = "SVDInbetweenTestTinyWanText", {"text": inputs["text"]}
        elif ct == "SVDInbetweenWanKeyframes":
            inputs.update(width=TINY["width"], height=TINY["height"],
                          frames=tiny_wan_frames(inputs["frames"], inputs["layout"]))
        elif ct == "WanFirstLastFrameToVideo":
            inputs.update(width=TINY["width"], height=TINY["height"], length=WAN_INSIDE_FRAMES)
        elif ct == "ImageScale":
            inputs.update(width=TINY["width"], height=TINY["height"])
        elif ct == "SplitSigmas":
            inputs["step"] = 1  # the reverse pass stopped after 1 of its 2 steps (the K ablation)
        elif ct == "ImageOnlyCheckpointLoader":
            node["class_type"] = "SVDInbetweenTestTinyModels"
            node["inputs"] = {"ckpt_name": "tiny"}
        elif ct == "SVDInbetweenConditioning":
            inputs.update(width=TINY["width"], height=TINY["height"], video_frames=TINY["frames"])
        elif ct == "SVDInbetweenLoadBackwardWeights":
            inputs["weights"] = weights_name
        elif ct == "FrameInterpolationModelLoader" and film:
            inputs["model_name"] = film
        elif ct == "SVDInbetweenChain":
            # 3-frame segments: the shipped chain (A, B, A) then has TINY["frames"] frames
            inputs.update(width=TINY["width"], height=TINY["height"], frames="3")
        if ct in ("SVDInbetweenSampler", "BasicScheduler", "SVDInbetweenChain", "KSampler"):
            inputs["steps"] = TINY["steps"]
        if ct in ("SVDInbetweenSampler", "SVDInbetweenRecurrentEuler", "SVDInbetweenChain"):
            inputs["recurrence"] = TINY["recurrence"]
    return p


def prepare_base(base: str, film: bool = False) -> str:
    """Input images, a tiny backward-weights file and a random LPIPS AlexNet (write_random_lpips) in a ComfyUI base
    directory; with `film`, also a random FILM file (tiny_models.TINY_FILM) in models/frame_interpolation."""
    import numpy as np
    from PIL import Image
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    rng = np.random.default_rng(0)
    for name in INPUT_IMAGES:
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(os.path.join(base, "input", name))
    import tiny_models
    from svd_inbetween.bench.models import random_backward_weights
    from svd_inbetween.weights.format import save_backward_weights
    folder = os.path.join(base, "models", "svd_inbetween")
    os.makedirs(folder, exist_ok=True)
    name = "tiny_backward.safetensors"
    save_backward_weights(os.path.join(folder, name), random_backward_weights(tiny_models.tiny_svd_model()),
                          "absolute", {"source": "test"})
    if film:
        tiny_models.write_tiny_film(os.path.join(base, "models", "frame_interpolation"))
    write_random_lpips(os.path.join(base, "models", "lpips"))
    return name


def write_random_lpips(folder: str) -> str:
    """A random torchvision AlexNet under the file name Wan Anchor Frame reads (no download)."""
    import torch
    import torchvision
    from svd_inbetween.evaluation.features import LPIPS_BACKBONES
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LPIPS_BACKBONES["alex"].filename)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def video_info(path: str) -> dict:
    import av
    with av.open(path) as c:
        frames = [f for f in c.decode(video=0)]
        return {"frames": len(frames), "width": frames[0].width, "height": frames[0].height}


def wan_outputs(session, prompt: dict) -> dict:
    """What a Wan template's inner nodes made: each Wan Keyframe Decode's frames [F, H, W, C], the anchor's
    position and image shape."""
    out = {}
    for nid, node in prompt.items():
        if node["class_type"] == "SVDInbetweenWanDecode":
            out[nid] = list(session.node_output(nid)[0][0].shape)
        elif node["class_type"] == "SVDInbetweenWanAnchor":
            image, position, _ = session.node_output(nid)
            out[nid] = {"position": int(position[0]), "anchor": list(image[0].shape)}
    return out


def job_workflows(job: dict) -> dict:
    from svd_inbetween.client.comfy_session import ComfySession
    base = job["base"]
    import tiny_models
    weights = prepare_base(base, film=tiny_models.host_has_film())
    session = ComfySession(base_directory=base, cpu=True, extra_custom_nodes=(os.path.join(HERE, "tiny_pack"),))
    import nodes
    from svd_inbetween.templates import unavailable_templates
    hidden = set(unavailable_templates(nodes.NODE_CLASS_MAPPINGS))  # what this host does not list

    def run_folder(api_dir: str) -> dict:
        results = {}
        for fname in sorted(os.listdir(api_dir)):
            if fname[:-len(".json")] in hidden:
                continue
            with open(os.path.join(api_dir, fname)) as f:
                prompt = tiny_prompt(json.load(f), weights, tiny_models.TINY_FILM)
            res = session.run(prompt)
            videos = []
            for out in res.outputs.values():
                for item in out.get("images", []):
                    path = os.path.join(base, "output", item.get("subfolder", ""), item["filename"])
                    # the filename prefix it was saved under: <subfolder>/<name>_00001_.mp4
                    videos.append({**video_info(path), "prefix": "/".join(
                        [item.get("subfolder", ""), item["filename"].rsplit("_", 2)[0]]).lstrip("/")})
            # node 6 makes the video latent; find its LATENT among its outputs (the chain's is the second)
            latent = next(o[0] for o in session.node_output("6") if isinstance(o[0], dict))["samples"]
            results[fname] = {"videos": videos, "latent_shape": list(latent.shape),
                              "latent_sum": float(latent.double().sum())}
            wan = wan_outputs(session, prompt)
            if wan:
                results[fname]["wan"] = wan
        return results

    results = run_folder(os.path.join(REPO, "workflows", "api"))
    if job.get("before"):
        results["before"] = run_folder(job["before"])
    return results


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    setup_comfy()
    result = {"workflows": job_workflows}[job["kind"]](job)
    print("RESULT:" + json.dumps(result))


if __name__ == "__main__":
    main()
