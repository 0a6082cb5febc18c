"""The shipped workflows against each host's node definitions (its live /object_info), and the
frontend-style UI -> API reading they rely on.

A template written for the newest ComfyUI must load on every supported host with each value in
its place: every node type exists and is not deprecated there, every saved widget value is valid
for the widget it lands on, and the prompt the host's frontend makes from the UI file is the API
twin as that host reads it.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from host import REPO
from ui_format import api_as_host_reads, api_to_ui, check_workflow, load_workflow, ui_to_api, workflow_names

UI_DIR = os.path.join(REPO, "workflows")
API_DIR = os.path.join(UI_DIR, "api")
# the templates as shipped before they were named after their modes: a user's saved copies (test_host_workflows.py)
BEFORE = os.path.join(REPO, "tests", "data", "shipped_before")

# SaveVideo as ComfyUI 0.3.64 and 0.33 describe it (trimmed): 0.33 turned `format` into a dynamic combo
# whose options carry a `codec` widget, and kept a hidden optional `codec`.
SAVE_VIDEO_OLD = {"input": {"required": {
    "video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
    "format": ["COMBO", {"default": "auto", "options": ["auto", "mp4"]}],
    "codec": ["COMBO", {"default": "auto", "options": ["auto", "h264"]}]}},
    "input_order": {"required": ["video", "filename_prefix", "format", "codec"]}, "output": [], "output_name": []}
CODEC = ["COMFY_DYNAMICCOMBO_V3", {"options": [{"key": "auto", "inputs": {"required": {}}},
                                               {"key": "h264", "inputs": {"required": {}, "optional": {
                                                   "crf": ["FLOAT", {"default": 23.0, "min": 0.0, "max": 51.0}]}}}]}]
SAVE_VIDEO_NEW = {"input": {
    "required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                 "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [
                     {"key": "auto", "inputs": {"required": {"codec": CODEC}}},
                     {"key": "mp4", "inputs": {"required": {"codec": CODEC}}}]}]},
    "optional": {"codec": CODEC}},
    "input_order": {"required": ["video", "filename_prefix", "format"], "optional": ["codec"]},
    "output": ["VIDEO"], "output_name": ["video"]}
SEEDED = {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"default": 0, "min": 0, "max": 99,
                                                                           "control_after_generate": True}],
                                 "mode": [["a", "b"], {}]},
                    "optional": {"bit_depth": ["INT", {"default": 8, "min": 8, "max": 10}]}},
          "input_order": {"required": ["model", "seed", "mode"], "optional": ["bit_depth"]},
          "output": ["MODEL"], "output_name": ["MODEL"]}


def one_node(node_type: str, widgets_values, inputs=()) -> dict:
    return {"nodes": [{"id": 1, "type": node_type, "inputs": list(inputs), "widgets_values": widgets_values}],
            "links": []}


def test_reading_fills_missing_widgets_with_defaults_and_drops_extra_values():
    # a workflow saved before bit_depth existed: the frontend keeps the widget's default
    got = ui_to_api(one_node("S", [5, "fixed", "b"]), {"S": SEEDED})
    assert got["1"]["inputs"] == {"seed": 5, "mode": "b", "bit_depth": 8}
    # a workflow saved on a newer host read by an older one: the extra value is dropped
    older = {"S": {**SEEDED, "input": {"required": SEEDED["input"]["required"]},
                   "input_order": {"required": ["model", "seed", "mode"]}}}
    assert ui_to_api(one_node("S", [5, "fixed", "b", 10]), older)["1"]["inputs"] == {"seed": 5, "mode": "b"}
    # the control-after-generate value is a slot of its own, not the next widget's value
    assert check_workflow(one_node("S", [5, "b", "fixed"]), {"S": SEEDED}) == [
        "node 1 (S): widget 'seed': control value 'b' is not one of ('fixed', 'increment', 'decrement', 'randomize')",
        "node 1 (S): widget 'mode': 'fixed' is not one of ['a', 'b']"]


def test_dynamic_combo_widgets_follow_their_combo():
    old_file = one_node("SaveVideo", ["video/x", "auto", "auto"])
    assert ui_to_api(old_file, {"SaveVideo": SAVE_VIDEO_NEW})["1"]["inputs"] == {
        "filename_prefix": "video/x", "format": "auto", "format.codec": "auto", "codec": "auto"}
    new_file = one_node("SaveVideo", ["video/x", "mp4", "h264", 20.0, "auto"])
    assert ui_to_api(new_file, {"SaveVideo": SAVE_VIDEO_NEW})["1"]["inputs"] == {
        "filename_prefix": "video/x", "format": "mp4", "format.codec": "h264", "format.codec.crf": 20.0,
        "codec": "auto"}
    # the same file on the old host: format and codec are its first values
    assert ui_to_api(new_file, {"SaveVideo": SAVE_VIDEO_OLD})["1"]["inputs"] == {
        "filename_prefix": "video/x", "format": "mp4", "codec": "h264"}
    assert check_workflow(one_node("SaveVideo", ["video/x", "mkv", "auto"]), {"SaveVideo": SAVE_VIDEO_NEW}) == [
        "node 1 (SaveVideo): widget 'format': 'mkv' is not one of ['auto', 'mp4']"]


def test_writing_then_reading_is_the_host_reading_and_checks_pass():
    defs = {"S": SEEDED, "SaveVideo": SAVE_VIDEO_NEW, "Src": {"input": {}, "output": ["MODEL"],
                                                             "output_name": ["MODEL"]}}
    api = {"1": {"class_type": "Src", "inputs": {}},
           "2": {"class_type": "S", "inputs": {"model": ["1", 0], "seed": 7, "mode": "b"}},
           "3": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "v", "format": "mp4"}}}
    ui = api_to_ui(api, defs)
    assert [n["widgets_values"] for n in ui["nodes"]] == [[], [7, "fixed", "b", 8], ["v", "mp4", "auto", "auto"]]
    assert ui_to_api(ui, defs) == api_as_host_reads(api, defs)
    assert check_workflow(ui, defs) == []
    assert check_workflow(ui, {**defs, "S": {**SEEDED, "deprecated": True}}) == ["node 2 (S): deprecated on this host"]
    assert check_workflow(ui, {k: v for k, v in defs.items() if k != "Src"}) == [
        "node 1 (Src): no such node type on this host"]


# each model loader of the templates, and the models/ folder its file goes in
LOADER_FOLDERS = {"ImageOnlyCheckpointLoader": "checkpoints", "SVDInbetweenLoadBackwardWeights": "svd_inbetween",
                  "FrameInterpolationModelLoader": "frame_interpolation", "UNETLoader": "diffusion_models",
                  "CLIPLoader": "text_encoders", "VAELoader": "vae", "CLIPVisionLoader": "clip_vision"}


def test_every_template_has_a_thumbnail_and_model_sources():
    from PIL import Image

    from svd_inbetween.cli.convert import default_file_name
    from svd_inbetween.evaluation.features import LPIPS_BACKBONES
    names = workflow_names(UI_DIR)
    assert names
    backward = default_file_name(delta=True, fp16=True)
    for name in names:
        with Image.open(os.path.join(UI_DIR, name + ".jpg")) as im:
            assert im.format == "JPEG" and min(im.size) >= 256, (name, im.format, im.size)
            assert len(im.convert("L").resize((32, 32)).getcolors(256)) > 20, f"{name}.jpg is a flat image"
        ui = load_workflow(UI_DIR, name)
        loaders = [n for n in ui["nodes"] if n["type"] in LOADER_FOLDERS]
        assert loaders, name
        for node in loaders:
            models = node["properties"]["models"]
            assert [m["name"] for m in models] == [node["widgets_values"][0]], (name, node["id"])
            for m in models:
                assert m["url"].startswith("https://") and m["directory"] == LOADER_FOLDERS[node["type"]], m
        for node in ui["nodes"]:  # Wan Anchor Frame names the LPIPS backbone it reads from models/lpips
            if node["type"] == "SVDInbetweenWanAnchor":
                assert node["properties"]["models"] == [{
                    "name": LPIPS_BACKBONES["alex"].filename, "directory": "lpips",
                    "url": LPIPS_BACKBONES["alex"].url}], name
            if node["type"] == "SVDInbetweenLoadBackwardWeights":
                assert node["widgets_values"][0] == backward, name


def test_readme_convert_command_writes_the_file_the_workflows_load():
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.convert import default_file_name, output_path
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    command = re.search(r"^svd-inbetween convert .*$", readme, re.M).group(0)
    args = build_parser().parse_args(command.split()[1:])
    args.output = UI_DIR  # any existing folder: the name is what matters
    assert os.path.basename(output_path(args)) == default_file_name(delta=True, fp16=True)
    assert default_file_name(delta=True, fp16=True) in readme
    assert "#backward-motion-weights" in json.dumps(load_workflow(UI_DIR, "svd_inbetween_gi"))
    assert "## Backward-motion weights" in readme


@pytest.mark.server
@pytest.mark.every_host
def test_workflows_against_the_hosts_object_info(tmp_path):
    from server_harness import ComfyServer
    with ComfyServer(str(tmp_path)) as server:
        info = server.get("/object_info")
    names = workflow_names(UI_DIR)
    assert names == workflow_names(API_DIR)
    from svd_inbetween.templates import unavailable_templates
    hidden = unavailable_templates(info)  # not listed by this host (test_host_film.py)
    assert hidden == ([] if "FrameInterpolate" in info else ["svd_inbetween_film"]), hidden
    for name in names:
        if name in hidden:
            continue
        ui, twin = load_workflow(UI_DIR, name), load_workflow(API_DIR, name)
        assert check_workflow(ui, info) == [], name
        host_reads = api_as_host_reads(twin, info)
        assert ui_to_api(ui, info) == host_reads, name
        for nid, node in host_reads.items():
            # no widget of this host is missing from the twin: built against the newest host's definitions
            missing = {k: v for k, v in node["inputs"].items() if twin[nid]["inputs"].get(k, object()) != v}
            assert not missing, (f"{name}: node {nid} ({node['class_type']}) lacks {missing}: "
                                 "run tools/build_workflows.py against the newest host")
    # a copy of a template saved before the renames loads on this host as it did (input ids unchanged)
    for name in workflow_names(os.path.join(BEFORE, "ui")):
        if name in hidden:
            continue
        ui, twin = load_workflow(os.path.join(BEFORE, "ui"), name), load_workflow(os.path.join(BEFORE, "api"), name)
        assert check_workflow(ui, info) == [], name
        assert ui_to_api(ui, info) == api_as_host_reads(twin, info), name
