"""Writes workflows/*.json (UI format) and workflows/api/*.json (API twins) from one definition.

Run after changing a node's inputs:  python tools/build_workflows.py
Widget order comes from the live node definitions in ComfyUI (COMFYUI_PATH).
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from ui_format import api_to_ui  # noqa: E402

CKPT = "svd_xt.safetensors"
BACKWARD = "svd_inbetween_backward.safetensors"


def conditioning(loader="1"):
    return {"class_type": "SVDInbetweenConditioning", "inputs": {
        "clip_vision": [loader, 1], "vae": [loader, 2], "start_image": ["2", 0], "end_image": ["3", 0],
        "width": 1024, "height": 576, "video_frames": 25, "motion_bucket_id": 127, "fps": 7,
        "augmentation_level": 0.02, "resize": "crop", "noise_seed": 0}}


def common():
    return {
        "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "start.png"}, "_meta": {"title": "Start frame"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "end.png"}, "_meta": {"title": "End frame"}},
        "4": {"class_type": "SVDInbetweenLoadBackwardWeights",
              "inputs": {"model": ["1", 0], "weights": BACKWARD, "strength": 1.0}},
        "5": conditioning(),
    }


def output_nodes(latent_from):
    return {
        "7": {"class_type": "VAEDecode", "inputs": {"samples": latent_from, "vae": ["1", 2]}},
        "8": {"class_type": "CreateVideo", "inputs": {"images": ["7", 0], "fps": 7.0}},
        "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": "video/svd_inbetween",
                                                    "format": "auto", "codec": "auto"}},
    }


CONDS = {"positive_start": ["5", 0], "negative_start": ["5", 1], "positive_end": ["5", 2], "negative_end": ["5", 3]}


def sampler_node(model, steps: int, cfg: float, mode: str, recurrence: int):
    return {"class_type": "SVDInbetweenSampler", "inputs": {
        "model": model, **CONDS, "latent_image": ["5", 4], "seed": 42, "steps": steps, "cfg": cfg, "mode": mode,
        "recurrence": recurrence, "recurrence_ratio": 0.5, "forward_weight": 0.5, "execution": "auto",
        "scheduler": "karras", "guidance": "constant", "min_cfg": 1.0}}


def custom_advanced_graph(cfg: float, mode: str, sampler: dict, steps: int):
    """SamplerCustomAdvanced with the pack's GUIDER and the given SAMPLER node."""
    g = common()
    g["10"] = {"class_type": "SVDInbetweenGuider", "inputs": {
        "model": ["4", 0], **CONDS, "cfg": cfg, "mode": mode, "forward_weight": 0.5, "execution": "auto",
        "guidance": "constant", "min_cfg": 1.0}}
    g["11"] = sampler
    g["12"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}}
    g["13"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": steps,
                                                          "denoise": 1.0}}
    g["6"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["12", 0], "guider": ["10", 0], "sampler": ["11", 0], "sigmas": ["13", 0], "latent_image": ["5", 4]}}
    g.update(output_nodes(["6", 0]))
    return g


def full():
    g = common()
    g["6"] = sampler_node(["4", 0], steps=50, cfg=2.0, mode="gi", recurrence=5)
    g.update(output_nodes(["6", 0]))
    return g


def custom_advanced():
    return custom_advanced_graph(2.0, "gi", {"class_type": "SVDInbetweenRecurrentEuler",
                                             "inputs": {"recurrence": 5, "recurrence_ratio": 0.5}}, steps=50)


def vibid():
    """The training-free fast mode: no backward weights, 25 steps, 2 UNet calls per step."""
    g = common()
    del g["4"]
    g["6"] = sampler_node(["1", 0], steps=25, cfg=1.0, mode="vibid", recurrence=0)
    g.update(output_nodes(["6", 0]))
    return g


def vibid_custom_advanced():
    """ViBiD's schedule with the backward-motion model, as GUIDER + SAMPLER building blocks."""
    return custom_advanced_graph(1.0, "vibid_gi", {"class_type": "SVDInbetweenViBiDSampler",
                                                   "inputs": {"cfg_pp": True, "dds": True}}, steps=25)


def keyframe_chain():
    """A loop A -> B -> A: three keyframes batched with ImageBatch, two segments, one video."""
    g = common()
    del g["5"]
    g["10"] = {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}}
    g["11"] = {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["2", 0]},
               "_meta": {"title": "Keyframes A, B, A (a loop)"}}
    g["6"] = {"class_type": "SVDInbetweenChain", "inputs": {
        "model": ["4", 0], "clip_vision": ["1", 1], "vae": ["1", 2], "images": ["11", 0], "width": 1024,
        "height": 576, "frames": "25", "motion_bucket_id": 127, "fps": 7, "augmentation_level": 0.02,
        "resize": "crop", "seed": 42, "steps": 50, "cfg": 2.0, "mode": "gi", "recurrence": 5,
        "recurrence_ratio": 0.5, "forward_weight": 0.5, "execution": "auto", "scheduler": "karras",
        "cfg_pp": True, "dds": True}}
    out = output_nodes(["6", 0])
    del out["7"]
    out["8"]["inputs"]["images"] = ["6", 0]
    out["9"]["inputs"]["filename_prefix"] = "video/svd_inbetween_chain"
    g.update(out)
    return g


WORKFLOWS = {"svd_inbetween_full": full, "svd_inbetween_custom_advanced": custom_advanced,
             "svd_inbetween_vibid": vibid, "svd_inbetween_vibid_custom_advanced": vibid_custom_advanced,
             "svd_inbetween_keyframe_chain": keyframe_chain}


def main() -> None:
    from svd_inbetween.cli.comfy_session import ComfySession
    ComfySession(cpu=True)
    import nodes
    for name, build in WORKFLOWS.items():
        api = build()
        with open(os.path.join(REPO, "workflows", "api", f"{name}.json"), "w") as f:
            json.dump(api, f, indent=2)
            f.write("\n")
        ui = api_to_ui(api, nodes.NODE_CLASS_MAPPINGS)
        with open(os.path.join(REPO, "workflows", f"{name}.json"), "w") as f:
            json.dump(ui, f, indent=1)
            f.write("\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
