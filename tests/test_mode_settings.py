"""Every mode runs at its own steps and cfg (the mode table) wherever a user leaves them to it: the settings object,
the node inputs' 0, `svd-inbetween run/eval --mode` without --steps/--cfg, the templates and the blueprints."""
from __future__ import annotations

import argparse
import json
import os

import pytest

from svd_inbetween.attention_patch.modes import BACKWARD_WEIGHT_MODES, MODE_TABLE, MODES, mode_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the authors run (GI paper: 50 Euler steps, cfg 2; ViBiD and MPD papers: 25 steps, cfg 1 with CFG++).
AUTHORS = {"gi": (50, 2.0), "gi_no_finetune": (50, 2.0), "trf": (50, 2.0), "vibid": (25, 1.0), "vibid_gi": (25, 1.0),
           "mpd": (25, 1.0), "mpd_trf": (25, 1.0), "mpd_gi": (25, 1.0)}


def test_the_mode_table_holds_each_modes_own_settings():
    assert set(AUTHORS) == set(MODES)
    for name, (steps, cfg) in AUTHORS.items():
        assert (mode_of(name).steps, mode_of(name).cfg) == (steps, cfg), name


@pytest.mark.parametrize("mode", MODES)
def test_settings_left_to_the_mode_resolve_to_its_own(mode):
    from svd_inbetween.samplers.settings import GenerationSettings
    own = GenerationSettings(mode=mode)
    assert (own.steps, own.cfg) == AUTHORS[mode]
    assert (GenerationSettings(mode=mode, steps=0, cfg=0.0).steps, GenerationSettings(mode=mode, cfg=0).cfg) == AUTHORS[mode]
    given = GenerationSettings(mode=mode, steps=7, cfg=3.5)
    assert (given.steps, given.cfg) == (7, 3.5)
    assert GenerationSettings(mode=mode, steps=7).cfg == AUTHORS[mode][1]


def test_unknown_mode_keeps_its_zero_for_the_mode_check_to_refuse():
    from svd_inbetween.samplers.settings import GenerationSettings
    s = GenerationSettings(mode="nope")
    assert s.spec is None and s.steps == 0


def test_mode_help_names_each_modes_own_settings():
    from svd_inbetween.attention_patch.modes import MODE_HELP
    for name, spec in MODE_TABLE.items():
        assert MODE_HELP[name].endswith(f"({spec.steps} steps, cfg {spec.cfg:g})"), MODE_HELP[name]


def run_args(*argv):
    from svd_inbetween.cli import build_parser
    return build_parser().parse_args(["run", "--start", "a.png", "--end", "b.png", "-o", "out.mp4", *argv])


def sampling_values(prompt: dict) -> dict:
    """(class_type, input) -> value of every steps / cfg input of the prompt."""
    return {(n["class_type"], k): v for n in prompt.values() for k, v in n["inputs"].items() if k in ("steps", "cfg")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workflow", [None, "svd_inbetween_gi_custom_advanced", "svd_inbetween_keyframe_chain"])
def test_run_mode_uses_the_modes_own_settings_unless_given(mode, workflow):
    from svd_inbetween.cli.run import build_prompt
    extra = ["--workflow", os.path.join(REPO, "workflows", "api", workflow + ".json")] if workflow else []
    prompt, _, _ = build_prompt(run_args("--mode", mode, *extra))
    values = sampling_values(prompt)
    steps, cfg = AUTHORS[mode]
    assert values and all(v == (steps if k[1] == "steps" else cfg) for k, v in values.items()), values
    if workflow is None:  # the shipped workflow reads the backward weights only for the modes that use them
        loaders = [n for n in prompt.values() if n["class_type"] == "SVDInbetweenLoadBackwardWeights"]
        assert bool(loaders) == (mode in BACKWARD_WEIGHT_MODES), mode
    given, _, _ = build_prompt(run_args("--mode", mode, "--steps", "9", *extra))
    assert {k[1]: v for k, v in sampling_values(given).items()} == {"steps": 9, "cfg": cfg}
    given, _, _ = build_prompt(run_args("--mode", mode, "--cfg", "3.5", *extra))
    assert {k[1]: v for k, v in sampling_values(given).items()} == {"steps": steps, "cfg": 3.5}


def test_run_without_mode_keeps_the_workflows_settings():
    from svd_inbetween.cli.run import build_prompt
    vibid = os.path.join(REPO, "workflows", "api", "svd_inbetween_vibid.json")
    prompt, _, _ = build_prompt(run_args("--workflow", vibid, "--steps", "30"))
    assert {k[1]: v for k, v in sampling_values(prompt).items()} == {"steps": 30, "cfg": 1.0}


def test_a_workflow_of_your_own_keeps_its_steps_and_cfg_with_mode(tmp_path):
    from svd_inbetween.cli.run import build_prompt
    with open(os.path.join(REPO, "workflows", "api", "svd_inbetween_gi.json")) as f:
        prompt = json.load(f)
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "SVDInbetweenSampler")
    prompt[sampler]["inputs"].update(steps=7, cfg=1.5)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(prompt))
    got, _, _ = build_prompt(run_args("--workflow", str(path), "--mode", "mpd"))
    assert (got[sampler]["inputs"]["steps"], got[sampler]["inputs"]["cfg"]) == (7, 1.5)


def test_a_linked_steps_input_stays_linked():
    with open(os.path.join(REPO, "workflows", "api", "svd_inbetween_gi.json")) as f:
        prompt = json.load(f)
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "SVDInbetweenSampler")
    prompt["99"] = {"class_type": "PrimitiveInt", "inputs": {"value": 12}}
    prompt[sampler]["inputs"]["steps"] = ["99", 0]
    from svd_inbetween.cli.workflow import apply_mode_settings
    apply_mode_settings(prompt, "mpd", {})
    assert prompt[sampler]["inputs"]["steps"] == ["99", 0] and prompt[sampler]["inputs"]["cfg"] == 1.0


@pytest.mark.parametrize("mode", MODES)
def test_eval_variant_runs_at_the_modes_own_settings_unless_it_names_them(mode):
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.eval import variants
    from svd_inbetween.cli.run import build_prompt
    args = build_parser().parse_args(["eval", "gt", "-o", "out", "--frames", "25", "--mode", mode,
                                      "--mode", f"{mode}:steps=11"])
    plain, named = variants(args)
    for variant, steps in ((plain, AUTHORS[mode][0]), (named, 11)):
        run = argparse.Namespace(**vars(args))
        run.mode = variant.mode
        for k, v in variant.settings:
            setattr(run, k, v)
        run.start_node = run.end_node = None
        prompt, _, _ = build_prompt(run)
        assert {k[1]: v for k, v in sampling_values(prompt).items()} == {"steps": steps, "cfg": AUTHORS[mode][1]}


@pytest.mark.parametrize("name", ["svd_inbetween_gi", "svd_inbetween_gi_custom_advanced", "svd_inbetween_vibid",
                                  "svd_inbetween_vibid_gi_custom_advanced", "svd_inbetween_mpd",
                                  "svd_inbetween_keyframe_chain", "svd_inbetween.app", "svd_inbetween_film"])
def test_each_template_shows_its_modes_own_settings(name):
    with open(os.path.join(REPO, "workflows", "api", name + ".json")) as f:
        prompt = json.load(f)
    (mode,) = {n["inputs"]["mode"] for n in prompt.values() if "mode" in n["inputs"]}
    values = sampling_values(prompt)
    assert values and all(v == (mode_of(mode).steps if k[1] == "steps" else mode_of(mode).cfg)
                          for k, v in values.items()), (name, values)


# templates named after what else they are than a mode: the chain, FILM after the mode, the app
NOT_A_MODE = {"svd_inbetween_keyframe_chain": "gi", "svd_inbetween_film": "gi", "svd_inbetween.app": "gi"}
# the Wan templates (no SVD mode): named after the node that makes them what they are
WAN_RUNS = {"wan_afb": "SVDInbetweenWanAnchor", "wan_flf": "WanFirstLastFrameToVideo",
            "wan_keyframes": "SVDInbetweenWanKeyframes"}


def shipped_names() -> list[str]:
    return sorted(f[:-len(".json")] for f in os.listdir(os.path.join(REPO, "workflows", "api")) if f.endswith(".json"))


@pytest.mark.parametrize("name", shipped_names())
def test_each_template_is_named_after_what_it_runs_and_saves_under_its_name(name):
    with open(os.path.join(REPO, "workflows", "api", name + ".json")) as f:
        prompt = json.load(f)
    modes = {n["inputs"]["mode"] for n in prompt.values() if "mode" in n["inputs"]}
    if name.startswith("wan_"):
        assert not modes and WAN_RUNS[name] in {n["class_type"] for n in prompt.values()}, name
    elif name in NOT_A_MODE:
        (mode,) = modes
        assert mode == NOT_A_MODE[name], name
    else:  # svd_inbetween_<mode> or svd_inbetween_<mode>_custom_advanced
        (mode,) = modes
        assert name in (f"svd_inbetween_{mode}", f"svd_inbetween_{mode}_custom_advanced"), (name, mode)
    prefixes = [n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "SaveVideo"]
    assert prefixes == [f"video/{name}"], prefixes


def test_old_template_names_and_paths_load_the_renamed_files(tmp_path, monkeypatch):
    from svd_inbetween.cli.run import SHIPPED, WORKFLOW, build_prompt, is_shipped, resolve_workflow
    from svd_inbetween.templates import RENAMED
    assert os.path.basename(WORKFLOW) == "svd_inbetween_gi.json" and set(RENAMED.values()) <= set(shipped_names())
    assert not set(RENAMED) & set(shipped_names())
    monkeypatch.chdir(REPO)
    for old, new in RENAMED.items():
        want = os.path.join(SHIPPED, new + ".json")
        for given in (old, old + ".json", os.path.join("workflows", "api", old + ".json"),
                      os.path.join(SHIPPED, old + ".json")):
            assert resolve_workflow(given) == want, given
            assert is_shipped(given), given
        # an old name runs as the shipped template: --mode sets the mode's own steps and cfg
        prompt, _, _ = build_prompt(run_args("--workflow", old, "--mode", "vibid"))
        assert {k[1]: v for k, v in sampling_values(prompt).items()} == {"steps": 25, "cfg": 1.0}, old
    assert resolve_workflow("svd_inbetween_mpd") == os.path.join(SHIPPED, "svd_inbetween_mpd.json")
    assert resolve_workflow(None) == WORKFLOW
    # a file of your own under an old name is yours: loaded as it is, its settings kept
    before = os.path.join(REPO, "tests", "data", "shipped_before", "api", "svd_inbetween_full.json")
    mine = tmp_path / "svd_inbetween_full.json"
    with open(before) as f:
        prompt = json.load(f)
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "SVDInbetweenSampler")
    prompt[sampler]["inputs"]["steps"] = 7
    mine.write_text(json.dumps(prompt))
    assert resolve_workflow(str(mine)) == str(mine) and not is_shipped(str(mine))
    got, _, _ = build_prompt(run_args("--workflow", str(mine), "--mode", "mpd"))
    assert got[sampler]["inputs"]["steps"] == 7
    assert resolve_workflow(str(tmp_path / "svd_inbetween_gi.json")) == str(tmp_path / "svd_inbetween_gi.json")


def blueprint_inner(name: str) -> dict:
    with open(os.path.join(REPO, "subgraphs", name + ".json")) as f:
        bp = json.load(f)
    (sub,) = bp["definitions"]["subgraphs"]
    return sub


@pytest.mark.parametrize("name", ["Keyframes to Video (SVD Inbetween)", "Keyframe Chain to Video (SVD Inbetween)"])
def test_blueprints_expose_mode_steps_and_cfg_left_to_the_mode(name):
    sub = blueprint_inner(name)
    exposed = {i["name"] for i in sub["inputs"]}
    assert {"mode", "steps", "cfg", "weights"} <= exposed, exposed
    inner = [n for n in sub["nodes"] if n["type"] in ("SVDInbetweenSampler", "SVDInbetweenChain")]
    assert len(inner) == 1
    values = inner[0]["widgets_values"]
    # steps, cfg, mode stand together on both nodes: 0 and 0.0 leave both settings to the mode picked
    assert values[values.index("gi") - 2: values.index("gi")] == [0, 0.0], values


def test_blueprints_show_the_nodes_names_for_the_same_input():
    """Both blueprints name their frame count `frames` and their seed `seed`, as every pack node shows them
    (Keyframes to Video's frame count is the conditioning's video_frames, shown as frames)."""
    for name in ("Keyframes to Video (SVD Inbetween)", "Keyframe Chain to Video (SVD Inbetween)"):
        sub = blueprint_inner(name)
        exposed = {i["name"] for i in sub["inputs"]}
        assert {"frames", "seed"} <= exposed and not {"video_frames", "noise_seed"} & exposed, (name, exposed)
