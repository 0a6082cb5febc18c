"""Writes workflows/*.json (UI format) and workflows/api/*.json (API twins) from one definition.

Run after changing a node's inputs, against the NEWEST supported ComfyUI:
    COMFYUI_PATH=~/ComfyUI-0.33 ~/ComfyUI-0.33/.venv/bin/python tools/build_workflows.py
Widget order and defaults come from that host's node definitions, so each UI file holds every value
its frontend shows; older hosts read the same file by position and drop the newer widgets (the
workflow-vs-/object_info test checks every supported host). The API twins are what the newest
frontend queues for the UI file. Thumbnails (workflows/<name>.jpg) come from tests/test_browser.py.

The same definitions give the subgraph blueprints (subgraphs/<name>.json, listed by ComfyUI 0.33+ in the node
library): a template without its LoadImage and SaveVideo nodes, wrapped as one subgraph whose inputs are the
images and the widgets a user sets, and whose output is the VIDEO.
"""
from __future__ import annotations

import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, HERE)

from host import import_pack  # noqa: E402
from ui_format import api_as_host_reads, api_to_ui, check_workflow, definitions, is_widget, walk  # noqa: E402

import_pack()  # this checkout as `svd_inbetween`, whatever else is installed
from svd_inbetween.attention_patch.modes import mode_of  # noqa: E402
from svd_inbetween.cli.convert import default_file_name  # noqa: E402
import wan_workflows  # noqa: E402  (the Wan templates and blueprint)

CKPT = "svd_xt.safetensors"
# what README's `svd-inbetween convert ... -o ComfyUI/models/svd_inbetween/ --base ... --fp16` writes
BACKWARD = default_file_name(delta=True, fp16=True)
FILM = "film_net_fp16.safetensors"
REPOSITORY = "https://github.com/svd-inbetween/ComfyUI-SVD-Inbetween"
# node properties.models: the frontend's missing-models list shows each file's folder and source
MODEL_SOURCES = {
    "ImageOnlyCheckpointLoader": [{
        "name": CKPT, "directory": "checkpoints",
        "url": "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/svd_xt.safetensors"}],
    # no direct file: the README says where the authors' release is and how to convert it
    "SVDInbetweenLoadBackwardWeights": [{
        "name": BACKWARD, "directory": "svd_inbetween", "url": REPOSITORY + "#backward-motion-weights"}],
    # the file ComfyUI's own "Frame Interpolation" blueprint names (0.33)
    "FrameInterpolationModelLoader": [{
        "name": FILM, "directory": "frame_interpolation",
        "url": "https://huggingface.co/Comfy-Org/frame_interpolation/resolve/main/frame_interpolation/" + FILM}],
    **wan_workflows.MODEL_SOURCES,
}


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
    """Decode, video, save; build() sets the filename prefix (video/<workflow name>)."""
    return {
        "7": {"class_type": "VAEDecode", "inputs": {"samples": latent_from, "vae": ["1", 2]}},
        "8": {"class_type": "CreateVideo", "inputs": {"images": ["7", 0], "fps": 7.0}},
        "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": None,
                                                    "format": "auto", "codec": "auto"}},
    }


CONDS = {"positive_start": ["5", 0], "negative_start": ["5", 1], "positive_end": ["5", 2], "negative_end": ["5", 3]}


def own(mode: str) -> dict:
    """The mode's own steps and cfg (the mode table): each template shows the numbers its mode runs at."""
    return {"steps": mode_of(mode).steps, "cfg": mode_of(mode).cfg}


def sampler_node(model, mode: str, recurrence: int):
    return {"class_type": "SVDInbetweenSampler", "inputs": {
        "model": model, **CONDS, "latent_image": ["5", 4], "seed": 42, **own(mode), "mode": mode,
        "recurrence": recurrence, "recurrence_ratio": 0.5, "forward_weight": 0.5, "execution": "auto",
        "scheduler": "karras", "guidance": "constant", "min_cfg": 1.0}}


def custom_advanced_graph(mode: str, sampler: dict, backward_weights: bool = True):
    """SamplerCustomAdvanced with the pack's GUIDER and the given SAMPLER node; without backward_weights
    the model comes straight from the checkpoint loader (the training-free modes)."""
    g = common()
    model = ["4", 0] if backward_weights else ["1", 0]
    if not backward_weights:
        del g["4"]
    g["10"] = {"class_type": "SVDInbetweenGuider", "inputs": {
        "model": model, **CONDS, "cfg": own(mode)["cfg"], "mode": mode, "forward_weight": 0.5, "execution": "auto",
        "guidance": "constant", "min_cfg": 1.0}}
    g["11"] = sampler
    g["12"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}}
    g["13"] = {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "karras",
                                                          "steps": own(mode)["steps"], "denoise": 1.0}}
    g["6"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["12", 0], "guider": ["10", 0], "sampler": ["11", 0], "sigmas": ["13", 0], "latent_image": ["5", 4]}}
    g.update(output_nodes(["6", 0]))
    return g


def gi():
    """The paper's method (mode gi) in the all-in-one sampler."""
    g = common()
    g["6"] = sampler_node(["4", 0], mode="gi", recurrence=5)
    g.update(output_nodes(["6", 0]))
    return g


def gi_custom_advanced():
    """Mode gi as GUIDER + SAMPLER building blocks in SamplerCustomAdvanced."""
    return custom_advanced_graph("gi", {"class_type": "SVDInbetweenRecurrentEuler",
                                        "inputs": {"recurrence": 5, "recurrence_ratio": 0.5}})


def vibid():
    """The training-free fast mode: no backward weights, 25 steps, 2 UNet calls per step."""
    g = common()
    del g["4"]
    g["6"] = sampler_node(["1", 0], mode="vibid", recurrence=0)
    g.update(output_nodes(["6", 0]))
    return g


def vibid_gi_custom_advanced():
    """ViBiD's schedule with the backward-motion model, as GUIDER + SAMPLER building blocks."""
    return custom_advanced_graph("vibid_gi", {"class_type": "SVDInbetweenViBiDSampler",
                                              "inputs": {"cfg_pp": True, "dds": True}})


def mpd():
    """Motion Prior Distillation on ViBiD (the authors' constants): the lowest DAVIS FVD in the MPD paper, no backward
    weights, 25 steps, about 1.3x vibid's UNet calls."""
    return custom_advanced_graph("mpd", {"class_type": "SVDInbetweenMPDSampler", "inputs": {
        "mpd_distill_fraction": 0.2, "mpd_distill_iterations": 3, "mpd_trf_distill_fraction": 0.1,
        "mpd_trf_distill_iterations": 1, "mpd_trf_repeats": 3, "cfg_pp": True, "dds": True}},
        backward_weights=False)


def keyframe_chain():
    """A loop A -> B -> A: the chain takes its three keyframes one per socket, two segments, one video."""
    g = common()
    del g["5"]
    g["6"] = {"class_type": "SVDInbetweenChain", "inputs": {
        "model": ["4", 0], "clip_vision": ["1", 1], "vae": ["1", 2], "width": 1024,
        "height": 576, "frames": "25", "motion_bucket_id": 127, "fps": 7, "augmentation_level": 0.02,
        "resize": "crop", "seed": 42, **own("gi"), "mode": "gi", "recurrence": 5,
        "recurrence_ratio": 0.5, "forward_weight": 0.5, "execution": "auto", "scheduler": "karras",
        "cfg_pp": True, "dds": True, "keyframe_1": ["2", 0], "keyframe_2": ["3", 0], "keyframe_3": ["2", 0]},
        "_meta": {"title": "Keyframe chain A, B, A (a loop)"}}
    out = output_nodes(["6", 0])
    del out["7"]
    out["8"]["inputs"]["images"] = ["6", 0]
    g.update(out)
    return g


def film():
    """Mode gi, then the host's FILM (FrameInterpolate, ComfyUI 0.33+) doubles the frame rate: 25 SVD frames
    become 49 at 14 fps, the same 3.5 s. Listed only by hosts that have FrameInterpolate (templates.py)."""
    g = gi()
    g["14"] = {"class_type": "FrameInterpolationModelLoader", "inputs": {"model_name": FILM}}
    g["15"] = {"class_type": "FrameInterpolate", "inputs": {"interp_model": ["14", 0], "images": ["7", 0],
                                                            "multiplier": 2},
               "_meta": {"title": "FILM: double the frame rate"}}
    g["8"]["inputs"].update(images=["15", 0], fps=14.0)
    return g


def app():
    """Mode gi as an app (frontend 1.49's App view): start and end image and a seed in, a video out."""
    return gi()


# App view (frontend 1.49+): a template whose name ends in ".app" is listed as an app; extra.linearMode opens it
# in app mode, extra.linearData names the widgets it shows ([node id, widget]) and its output nodes.
APP_EXTRA = {"linearMode": True, "linearData": {"inputs": [[2, "image"], [3, "image"], [6, "seed"]], "outputs": [9]}}

# named after what they run (a mode, or the chain, FILM, the app); templates.RENAMED: the names before issue 28
WORKFLOWS = {"svd_inbetween_gi": gi, "svd_inbetween_gi_custom_advanced": gi_custom_advanced,
             "svd_inbetween_vibid": vibid, "svd_inbetween_vibid_gi_custom_advanced": vibid_gi_custom_advanced,
             "svd_inbetween_mpd": mpd, "svd_inbetween_keyframe_chain": keyframe_chain, "svd_inbetween.app": app,
             "svd_inbetween_film": film, **wan_workflows.WORKFLOWS}
EXTRA = {"svd_inbetween.app": APP_EXTRA}
# the app lists widgets by label: both image widgets would read "image"
LABELS = {"svd_inbetween.app": {"2": {"image": "Start frame"}, "3": {"image": "End frame"}}}


# Subgraph blueprints: the template each one wraps, its IMAGE inputs ({input: [(node, input), ...]}, in the
# order the blueprint node shows them) and the widgets it exposes: (node, widget), named as the widget shows, or
# (name, [(node, widget), ...]) for one widget that drives several inner nodes (wan_workflows.py); "category"
# overrides BLUEPRINT_CATEGORY.
# A blueprint's steps and cfg are 0, the mode's own (attention_patch/modes.py): whichever mode a user picks runs at
# its settings; its backward-weights loader passes the model on where the file is missing, so only the modes that
# use the weights need the file.
BLUEPRINTS = {
    "Keyframes to Video (SVD Inbetween)": {
        "template": "svd_inbetween_gi",
        "images": {"start_image": [("5", "start_image")], "end_image": [("5", "end_image")]},
        "widgets": [("6", "mode"), ("6", "seed"), ("6", "steps"), ("6", "cfg"), ("1", "ckpt_name"),
                    ("4", "weights"), ("5", "width"), ("5", "height"), ("5", "video_frames")],
        "description": "Generative Inbetweening: a video from a start and an end image with Stable Video Diffusion "
                       "run forward and backward (the svd_inbetween_gi template as one node).",
    },
    "Keyframe Chain to Video (SVD Inbetween)": {
        "template": "svd_inbetween_keyframe_chain",
        "images": {"keyframe_1": [("6", "keyframe_1")], "keyframe_2": [("6", "keyframe_2")],
                   "keyframe_3": [("6", "keyframe_3")]},
        "widgets": [("6", "mode"), ("6", "seed"), ("6", "steps"), ("6", "cfg"), ("1", "ckpt_name"),
                    ("4", "weights"), ("6", "width"), ("6", "height"), ("6", "frames")],
        "description": "One video through three keyframes (A, B, C; a loop with C = A): SVD Inbetween per segment, "
                       "joined (the svd_inbetween_keyframe_chain template as one node).",
    },
    **wan_workflows.BLUEPRINTS,
}
# the value that leaves a setting to the mode (nodes/inputs.py)
MODE_OWN = {"steps": 0, "cfg": 0.0}
BLUEPRINT_CATEGORY = "Inbetween/SVD"
# stable ids: a regenerated blueprint keeps its id, so a saved workflow using it still finds its definition
BLUEPRINT_NAMESPACE = uuid.UUID("5b0c5e0e-6f1a-4c53-9b39-2f4f3d1e0a22")


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(BLUEPRINT_NAMESPACE, "/".join(parts)))


def widget_targets(entry: tuple) -> tuple[str | None, list[tuple[str, str]]]:
    """(exposed name or None for the widget's own, [(node, widget), ...]) of one BLUEPRINTS widget entry."""
    return entry if isinstance(entry[1], list) else (None, [entry])


def blueprint(name: str, defs: dict) -> dict:
    """The subgraph blueprint `name` of BLUEPRINTS for the host `defs` describes."""
    spec = BLUEPRINTS[name]
    twin, _ = build(spec["template"], defs)
    api = json.loads(json.dumps(twin))
    for nid, widget in (t for entry in spec["widgets"] for t in widget_targets(entry)[1]):
        if widget in MODE_OWN and "mode" in api[nid]["inputs"]:  # the SVD sampler's mode has its own settings
            api[nid]["inputs"][widget] = MODE_OWN[widget]
    dropped = {nid for nid, n in api.items() if n["class_type"] in ("LoadImage", "SaveVideo")}
    video_from = next(api[nid]["inputs"]["video"] for nid in dropped if api[nid]["class_type"] == "SaveVideo")
    for nid in dropped:
        del api[nid]
    for node in api.values():  # image inputs now come from the subgraph's inputs
        node["inputs"] = {k: v for k, v in node["inputs"].items() if not (isinstance(v, list) and v[0] in dropped)}
    inner = api_to_ui(api, defs, properties=model_properties(api))
    by_id = {str(n["id"]): n for n in inner["nodes"]}
    x0 = min(n["pos"][0] for n in inner["nodes"])
    for n in inner["nodes"]:  # room on the left for the subgraph's input node
        n["pos"][0] += 260 - x0
    links = [{"id": i, "origin_id": o, "origin_slot": os_, "target_id": t, "target_slot": ts, "type": ty}
             for i, o, os_, t, ts, ty in inner["links"]]
    inputs, top_inputs = [], []

    def link_into(slot: int, nid: str, input_name: str, typ: str) -> int:
        node = by_id[nid]
        entry = next((i for i in node["inputs"] if i["name"] == input_name), None)
        if entry is None:  # a widget that was not a socket yet
            entry = {"name": input_name, "type": typ, "widget": {"name": input_name}, "link": None}
            node["inputs"].append(entry)
        link_id = len(links) + 1
        entry["link"] = link_id
        links.append({"id": link_id, "origin_id": -10, "origin_slot": slot, "target_id": int(nid),
                      "target_slot": node["inputs"].index(entry), "type": typ})
        return link_id

    for input_name, targets in spec["images"].items():
        ids = [link_into(len(inputs), nid, target, "IMAGE") for nid, target in targets]
        inputs.append({"id": _uid(name, "input", input_name), "name": input_name, "type": "IMAGE", "linkIds": ids})
        top_inputs.append({"name": input_name, "type": "IMAGE", "link": None})
    for entry in spec["widgets"]:
        exposed, targets = widget_targets(entry)
        nid, widget = targets[0]
        typ, opts = next((t, o) for w, t, o in walk(defs[api[nid]["class_type"]], lambda *a: None) if w == widget)
        assert is_widget(typ), (name, nid, widget)
        typ = "COMBO" if isinstance(typ, list) else typ
        shown = exposed or opts.get("display_name") or widget  # the name the node shows (video_frames: frames)
        ids = [link_into(len(inputs), t_nid, t_widget, typ) for t_nid, t_widget in targets]
        inputs.append({"id": _uid(name, "input", exposed or widget), "name": shown, "type": typ, "linkIds": ids})
        top_inputs.append({"name": shown, "type": typ, "widget": {"name": shown}, "link": None})
    src, slot = video_from
    out_link = len(links) + 1
    links.append({"id": out_link, "origin_id": int(src), "origin_slot": slot, "target_id": -20, "target_slot": 0,
                  "type": "VIDEO"})
    by_id[src]["outputs"][slot]["links"].append(out_link)
    x1 = max(n["pos"][0] + n["size"][0] for n in inner["nodes"])
    sub_id = _uid(name)
    subgraph = {
        "id": sub_id, "version": 1, "revision": 0, "name": name,
        "category": spec.get("category", BLUEPRINT_CATEGORY),
        "description": spec["description"], "config": {}, "extra": {}, "groups": [], "widgets": [],
        "state": {"lastGroupId": 0, "lastNodeId": inner["last_node_id"], "lastLinkId": len(links), "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [40, 40, 160, 40 + 20 * len(inputs)]},
        "outputNode": {"id": -20, "bounding": [x1 + 60, 40, 120, 60]},
        "inputs": inputs,
        "outputs": [{"id": _uid(name, "output", "VIDEO"), "name": "VIDEO", "type": "VIDEO", "linkIds": [out_link]}],
        "nodes": inner["nodes"], "links": links,
    }
    top = {"id": 1, "type": sub_id, "pos": [0, 0], "size": [400, 40 + 26 * len(top_inputs)], "flags": {}, "order": 0,
           "mode": 0, "inputs": top_inputs, "outputs": [{"name": "VIDEO", "type": "VIDEO", "links": []}],
           "title": name, "properties": {}, "widgets_values": []}
    return {"revision": 0, "last_node_id": 1, "last_link_id": 0, "nodes": [top], "links": [], "version": 0.4,
            "definitions": {"subgraphs": [subgraph]}, "extra": {}}


def model_properties(api: dict) -> dict:
    """Each loader's model files; of several for one loader class (UNETLoader), the one the node loads."""
    out = {}
    for nid, n in api.items():
        sources = MODEL_SOURCES.get(n["class_type"], [])
        loaded = [m for m in sources if m["name"] in n["inputs"].values()]
        if sources:
            out[nid] = {"models": loaded or sources}
    return out


def build(name: str, defs: dict) -> tuple[dict, dict]:
    """(API twin, UI workflow) of one template for the host `defs` describes."""
    api = WORKFLOWS[name]()
    for node in api.values():  # each workflow's videos under its own name
        if node["class_type"] == "SaveVideo":
            node["inputs"]["filename_prefix"] = f"video/{name}"
    twin = api_as_host_reads(api, defs)
    for nid, node in api.items():
        if "_meta" in node:
            twin[nid]["_meta"] = node["_meta"]
    ui = api_to_ui(twin, defs, properties=model_properties(api), extra=EXTRA.get(name), labels=LABELS.get(name))
    problems = check_workflow(ui, defs)
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(problems))
    return twin, ui


def main() -> None:
    from svd_inbetween.client.comfy_session import ComfySession
    ComfySession(cpu=True)
    import comfyui_version
    import nodes
    defs = definitions(nodes.NODE_CLASS_MAPPINGS)
    print(f"node definitions of ComfyUI {comfyui_version.__version__}")
    from svd_inbetween.templates import RENAMED
    assert not set(WORKFLOWS) & set(RENAMED), "a template may not take a name an older one had"
    for name in WORKFLOWS:
        twin, ui = build(name, defs)
        with open(os.path.join(REPO, "workflows", "api", f"{name}.json"), "w") as f:
            json.dump(twin, f, indent=2)
            f.write("\n")
        with open(os.path.join(REPO, "workflows", f"{name}.json"), "w") as f:
            json.dump(ui, f, indent=1)
            f.write("\n")
        print("wrote", name)
    os.makedirs(os.path.join(REPO, "subgraphs"), exist_ok=True)
    for name in BLUEPRINTS:
        with open(os.path.join(REPO, "subgraphs", f"{name}.json"), "w") as f:
            json.dump(blueprint(name, defs), f, indent=1)
            f.write("\n")
        print("wrote blueprint", name)


if __name__ == "__main__":
    main()
