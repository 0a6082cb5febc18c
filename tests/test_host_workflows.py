"""Host: shipped workflows, in-process (PromptExecutor in a subprocess) and through the real server."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from host import NODE_IDS, REPO, load_host_nodes

HERE = os.path.dirname(os.path.abspath(__file__))
API_DIR = os.path.join(REPO, "workflows", "api")
UI_DIR = os.path.join(REPO, "workflows")
# the API twins and UI files as shipped before the templates were named after their modes (git f786869): a user's
# saved copy of one keeps loading and running
BEFORE = os.path.join(HERE, "data", "shipped_before")
# API twins that run the same method two ways and must give the same latent
SAME_METHOD = [("svd_inbetween_gi.json", "svd_inbetween_gi_custom_advanced.json"),
               ("svd_inbetween_gi.json", "svd_inbetween.app.json"),
               ("svd_inbetween_gi.json", "svd_inbetween_film.json")]  # FILM only after the decoder
FILM = "svd_inbetween_film.json"  # needs the host's FrameInterpolate (0.33+); other hosts do not list it
# the Wan templates at comfy_job.tiny_prompt's sizes: (video frames, latent shape of node 6's sampler): wan_afb's
# video is its third pass, start + anchor + end (3 keyframes: 7 frames, 3 + 1 latent frames); wan_flf's the inside
# layout's 9 frames (3 latent frames); wan_keyframes' 4 keyframes in 8 frames (4 + 1 latent frames)
WAN = {"wan_afb.json": (7, [1, 16, 4, 8, 8]), "wan_flf.json": (9, [1, 16, 3, 8, 8]),
       "wan_keyframes.json": (8, [1, 16, 5, 8, 8])}
TINY = 64


def video_frames(name: str) -> int:
    """Frames of a shipped workflow's video at the tiny settings."""
    if name in WAN:
        return WAN[name][0]
    return 9 if name == FILM else 5  # FILM doubles the frame rate: 2 * (5 - 1) + 1


def run_job(tmp_path, kind: str, **extra) -> dict:
    job = {"kind": kind, "base": str(tmp_path), **extra}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "comfy_job.py"), str(path)],
                          capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT:")]
    assert proc.returncode == 0 and lines, f"job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT:"):])


def api_workflows() -> list[str]:
    return sorted(f for f in os.listdir(API_DIR) if f.endswith(".json"))


def renamed(fname: str) -> str:
    """The file that ships today for a file name shipped before (templates.RENAMED)."""
    from svd_inbetween.templates import RENAMED
    stem = fname[:-len(".json")]
    return RENAMED.get(stem, stem) + ".json"


def test_every_ui_workflow_has_an_api_twin():
    ui = sorted(f for f in os.listdir(UI_DIR) if f.endswith(".json"))
    assert ui and ui == api_workflows()


@pytest.mark.host
def test_ui_workflows_describe_their_api_twins():
    from svd_inbetween.client.comfy_session import ComfySession  # noqa: F401  (ComfyUI already importable)
    import nodes
    from ui_format import api_as_host_reads, definitions, ui_to_api
    load_host_nodes()
    defs = definitions(nodes.NODE_CLASS_MAPPINGS)
    from svd_inbetween.templates import unavailable_templates
    hidden = {n + ".json" for n in unavailable_templates(nodes.NODE_CLASS_MAPPINGS)}
    assert hidden <= {FILM}, hidden
    for name in sorted(set(api_workflows()) - hidden):
        with open(os.path.join(API_DIR, name)) as f:
            api = json.load(f)
        with open(os.path.join(UI_DIR, name)) as f:
            ui = json.load(f)
        # what this host's frontend would queue for the UI file is the twin as this host reads it
        assert ui_to_api(ui, defs) == api_as_host_reads(api, defs), name
    # a UI file saved from a template before the renames: this host still reads it, node for node and value for
    # value, as today's template of the same graph (only the filename prefix differs: its own per template now)
    from ui_format import check_workflow
    before = sorted(f for f in os.listdir(os.path.join(BEFORE, "ui")) if f.endswith(".json"))
    assert {renamed(f) for f in before} == set(api_workflows()) - set(WAN)
    for name in sorted(set(before) - hidden):
        with open(os.path.join(BEFORE, "ui", name)) as f:
            old_ui = json.load(f)
        with open(os.path.join(BEFORE, "api", name)) as f:
            old_api = json.load(f)
        with open(os.path.join(UI_DIR, renamed(name))) as f:
            ui = json.load(f)
        assert check_workflow(old_ui, defs) == [], name
        assert ui_to_api(old_ui, defs) == api_as_host_reads(old_api, defs), name
        assert without_prefix(ui_to_api(old_ui, defs)) == without_prefix(ui_to_api(ui, defs)), name


def without_prefix(prompt: dict) -> dict:
    return {nid: {**n, "inputs": {k: v for k, v in n["inputs"].items() if k != "filename_prefix"}}
            for nid, n in prompt.items()}


@pytest.mark.host
def test_shipped_workflows_run_in_process(tmp_path):
    res = run_job(tmp_path, "workflows", before=os.path.join(BEFORE, "api"))
    before = res.pop("before")
    import tiny_models
    assert sorted(res) == [n for n in api_workflows() if n != FILM or tiny_models.host_has_film()]
    for name, r in res.items():
        # each workflow saves under its own name: two workflows' videos never share one
        assert r["videos"] == [{"frames": video_frames(name), "width": TINY, "height": TINY,
                                "prefix": "video/" + name[:-len(".json")]}], name
        assert r["latent_shape"] == (WAN[name][1] if name in WAN else [5, 4, 8, 8]), name
    check_wan_afb(res["wan_afb.json"]["wan"])
    # an API prompt saved from a template before the renames runs and makes what today's template makes
    assert sorted(renamed(n) for n in before) == sorted(set(res) - set(WAN))
    for name, r in before.items():
        assert r["latent_sum"] == res[renamed(name)]["latent_sum"], name
        assert [{**v, "prefix": None} for v in r["videos"]] == [
            {**v, "prefix": None} for v in res[renamed(name)]["videos"]], name
    # the all-in-one sampler and the SamplerCustomAdvanced composition are the same method
    same = [(a, b) for a, b in SAME_METHOD if b in res]
    for a, b in same:
        assert res[a]["latent_sum"] == res[b]["latent_sum"], (a, b)
    # the fast and the chained workflows are other methods
    assert len({r["latent_sum"] for r in res.values()}) == len(res) - len(same)


def check_wan_afb(made: dict) -> None:
    """wan_afb's passes (comfy_job.wan_outputs, by node id): forward (22) and early-stopped reverse (30) are 2-keyframe
    clips of 6 frames; the anchor is one frame from a breakpoint inside the forward clip (edge_frames 1); the third
    pass (7) is the 3-keyframe clip, 7 frames."""
    clip = [6, TINY, TINY, 3]
    assert made["22"] == clip and made["30"] == clip, made
    assert made["31"]["anchor"] == [1, TINY, TINY, 3] and 1 <= made["31"]["position"] <= 4, made
    assert made["7"] == [WAN["wan_afb.json"][0], TINY, TINY, 3], made


@pytest.mark.server
def test_real_server_object_info_and_workflows_over_http(tmp_path):
    sys.path.insert(0, HERE)
    from comfy_job import prepare_base, tiny_prompt, video_info
    from server_harness import ComfyServer

    import tiny_models
    weights = prepare_base(str(tmp_path), film=tiny_models.host_has_film())
    with ComfyServer(str(tmp_path)) as server:
        info = server.get("/object_info")
        assert NODE_IDS <= set(info), NODE_IDS - set(info)
        for node_id in NODE_IDS:
            for section in ("required", "optional"):
                for name, spec in info[node_id]["input"].get(section, {}).items():
                    assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert weights in info["SVDInbetweenLoadBackwardWeights"]["input"]["required"]["weights"][1]["options"]
        log = server.log()
        failed = [ln for ln in log.splitlines() if "IMPORT FAILED" in ln]
        assert not [ln for ln in failed if "svd_inbetween" in ln], failed
        for name in api_workflows():
            if name == FILM and "FrameInterpolate" not in info:
                continue  # not listed there (test_host_film.py)
            with open(os.path.join(API_DIR, name)) as f:
                prompt = tiny_prompt(json.load(f), weights, tiny_models.TINY_FILM)
            entry = server.wait(server.queue(prompt))
            assert entry["status"]["status_str"] == "success", entry["status"]
            videos = [item for out in entry["outputs"].values() for item in out.get("images", [])]
            assert len(videos) == 1
            v = videos[0]
            info_v = video_info(os.path.join(str(tmp_path), "output", v.get("subfolder", ""), v["filename"]))
            assert info_v == {"frames": video_frames(name), "width": TINY, "height": TINY}, name
        # a bad graph is refused with our message and the server keeps serving
        with open(os.path.join(API_DIR, api_workflows()[0])) as f:
            bad = tiny_prompt(json.load(f), weights)
        for node in bad.values():
            if node["class_type"] in ("SVDInbetweenSampler", "SVDInbetweenGuider"):
                node["inputs"]["model"] = ["1", 0]  # stock model without backward weights, mode gi
        entry = server.wait(server.queue(bad))
        assert entry["status"]["status_str"] == "error", json.dumps(entry)[:3000]
        messages = json.dumps(entry["status"]["messages"])
        assert "SVDInbetweenLoadBackwardWeights" in messages and "mode 'gi'" in messages
        assert server.get("/system_stats")


def test_cli_run_argument_errors(tmp_path):
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.run import collect_pairs
    ckpt = ["--checkpoint", "x.safetensors", "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="--start and --end"):
        collect_pairs(build_parser().parse_args(["run", "--start", "a.png", *ckpt]))
    with pytest.raises(SystemExit, match="give --start and --end"):
        collect_pairs(build_parser().parse_args(["run", *ckpt]))
    with pytest.raises(SystemExit, match="not found"):
        collect_pairs(build_parser().parse_args(["run", "--start", "nope.png", "--end", "nope2.png", *ckpt]))
    (tmp_path / "pairs.csv").write_text("only_one\n")
    with pytest.raises(SystemExit, match="line 1"):
        collect_pairs(build_parser().parse_args(["run", "--pairs", str(tmp_path / "pairs.csv"), *ckpt]))
