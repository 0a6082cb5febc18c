"""The subgraph blueprints (subgraphs/*.json) as a real ComfyUI server serves them.

ComfyUI 0.33 (and 0.8, whose app/subgraph_manager.py already globs custom_nodes/*/subgraphs/) lists a
pack's blueprints at GET /global_subgraphs and serves each file's text at GET /global_subgraphs/{id}.
0.3.64 has no such route: there the folder is inert and the pack must load as before.
The browser side (node library, adding the blueprint, running it) is tests/test_browser.py.
"""
from __future__ import annotations

import json
import os
import urllib.error

import pytest

from host import COMFYUI_PATH, NODE_IDS, REPO
from ui_format import check_workflow

pytestmark = [pytest.mark.server, pytest.mark.every_host]

SUBGRAPH_DIR = os.path.join(REPO, "subgraphs")
PACK = "custom_nodes.svd_inbetween"
MIN_BLUEPRINTS = {"Keyframes to Video (SVD Inbetween)", "Keyframe Chain to Video (SVD Inbetween)",
                  "Keyframes to Video (Wan, Anchor Frame Bridging)"}
# what each blueprint exposes at least: the SVD ones a mode and its files, the Wan one its prompts and passes
EXPOSED = {"Inbetween/SVD": {"mode", "seed", "steps", "ckpt_name", "weights"},
           "Inbetween/Wan": {"prompt", "reverse_prompt", "seed", "steps", "unet_name", "width", "height",
                             "reverse_stop_step"}}


def shipped() -> dict[str, str]:
    """{file stem: file text} of subgraphs/*.json."""
    out = {}
    for f in sorted(os.listdir(SUBGRAPH_DIR)):
        if f.endswith(".json"):
            with open(os.path.join(SUBGRAPH_DIR, f), encoding="utf-8") as fh:
                out[f[:-5]] = fh.read()
    return out


def host_serves_blueprints() -> bool:
    return os.path.isfile(os.path.join(COMFYUI_PATH, "app", "subgraph_manager.py"))


def test_blueprints_are_what_build_workflows_writes():
    """The files are the build's output for the newest host's definitions (shape, ids, links)."""
    assert MIN_BLUEPRINTS <= set(shipped()), set(shipped())
    for name, text in shipped().items():
        bp = json.loads(text)
        (sub,) = bp["definitions"]["subgraphs"]
        (top,) = bp["nodes"]
        assert top["type"] == sub["id"] and sub["name"] == name
        assert [o["type"] for o in sub["outputs"]] == ["VIDEO"]
        assert [i["name"] for i in sub["inputs"]] == [i["name"] for i in top["inputs"]]
        assert EXPOSED[sub["category"]] <= {i["name"] for i in sub["inputs"]}, name
        links = {link["id"]: link for link in sub["links"]}
        for slot, i in enumerate(sub["inputs"]):
            for lid in i["linkIds"]:
                assert links[lid]["origin_id"] == -10 and links[lid]["origin_slot"] == slot, (name, i)
        nodes = {n["id"]: n for n in sub["nodes"]}
        for link in links.values():  # every link ends on the input that names it
            if link["target_id"] != -20:
                assert nodes[link["target_id"]]["inputs"][link["target_slot"]]["link"] == link["id"], (name, link)


def test_one_wan_widget_drives_every_pass():
    """The Wan blueprint's seed, steps, width and height each reach all three passes (and the scaling of both
    images), through one input with several links."""
    bp = json.loads(shipped()["Keyframes to Video (Wan, Anchor Frame Bridging)"])
    (sub,) = bp["definitions"]["subgraphs"]
    nodes = {n["id"]: n for n in sub["nodes"]}
    links = {link["id"]: link for link in sub["links"]}
    reached = {i["name"]: sorted((nodes[links[lid]["target_id"]]["type"],
                                  nodes[links[lid]["target_id"]]["inputs"][links[lid]["target_slot"]]["name"])
                                 for lid in i["linkIds"]) for i in sub["inputs"]}
    assert reached["seed"] == [("KSampler", "seed")] * 2 + [("RandomNoise", "noise_seed")]
    assert reached["steps"] == [("BasicScheduler", "steps")] + [("KSampler", "steps")] * 2
    for side in ("width", "height"):
        assert reached[side] == [("ImageScale", side)] * 2 + [("SVDInbetweenWanKeyframes", side)] * 3
    assert reached["reverse_stop_step"] == [("SplitSigmas", "step")]
    assert reached["start_image"] == reached["end_image"] == [("ImageScale", "image")]


def test_server_lists_and_serves_the_blueprints(tmp_path):
    from server_harness import ComfyServer

    with ComfyServer(str(tmp_path)) as server:
        info = server.get("/object_info")
        assert NODE_IDS <= set(info), NODE_IDS - set(info)  # the pack loads, blueprints or not
        failed = [ln for ln in server.log().splitlines() if "IMPORT FAILED" in ln and "svd_inbetween" in ln]
        assert not failed, failed
        if not host_serves_blueprints():
            with pytest.raises(urllib.error.HTTPError):  # 0.3.64: no route, the folder is never read
                server.get("/global_subgraphs")
            return
        listed = {k: v for k, v in server.get("/global_subgraphs").items()
                  if v.get("info", {}).get("node_pack") == PACK}
        files = shipped()
        assert sorted(v["name"] for v in listed.values()) == sorted(files), listed
        for entry_id, entry in listed.items():
            assert entry["source"] == "custom_node" and "data" not in entry and "path" not in entry, entry
            full = server.get(f"/global_subgraphs/{entry_id}")
            assert full["data"] == files[entry["name"]], entry["name"]
            bp = json.loads(full["data"])
            inner = bp["definitions"]["subgraphs"][0]
            assert check_workflow(inner, info) == [], entry["name"]
