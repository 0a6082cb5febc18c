"""FILM next to the pack, on a real server (one per module) with tiny random models: ComfyUI 0.33+ ships FILM
(FrameInterpolate); there the svd_inbetween_film template is listed and runs, and `svd-inbetween eval --film`
scores a FILM row beside the pack's modes. A host without the node (0.8, 0.3.64) does not list the template and
serves the others as before."""
from __future__ import annotations

import json
import os

import pytest

from host import REPO

pytestmark = pytest.mark.server
FILM = "svd_inbetween_film"


def test_film_template_is_hidden_from_a_listing_without_frame_interpolate():
    from svd_inbetween.templates import filter_listing, template_nodes, unavailable_templates
    folder = os.path.join(REPO, "workflows")
    assert {"FrameInterpolationModelLoader", "FrameInterpolate"} <= template_nodes(os.path.join(folder, FILM + ".json"))
    every = set().union(*(template_nodes(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".json")))
    assert unavailable_templates(every, folder) == []
    old_host = every - {"FrameInterpolate"}
    assert unavailable_templates(old_host, folder) == [FILM]
    listing = {"svd_inbetween": ["svd_inbetween_gi", FILM], "other_pack": [FILM]}
    assert filter_listing(listing, "svd_inbetween", unavailable_templates(old_host, folder)) == {
        "svd_inbetween": ["svd_inbetween_gi"], "other_pack": [FILM]}
    assert filter_listing(listing, "svd_inbetween", unavailable_templates(every, folder)) == listing


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import tiny_models
    from comfy_job import prepare_base
    from server_harness import ComfyServer
    base = str(tmp_path_factory.mktemp("film"))
    weights = prepare_base(base, film=tiny_models.host_has_film())
    with ComfyServer(base) as s:
        s.weights, s.has_film = weights, "FrameInterpolate" in s.get("/object_info")
        assert s.has_film == tiny_models.host_has_film()
        yield s


@pytest.mark.every_host
def test_template_listed_only_where_the_host_has_frame_interpolate(server):
    listing = server.get("/api/workflow_templates")
    assert listing == server.get("/workflow_templates")
    shipped = {f[:-len(".json")] for f in os.listdir(os.path.join(REPO, "workflows")) if f.endswith(".json")}
    expected = shipped if server.has_film else shipped - {FILM}
    assert sorted(listing["svd_inbetween"]) == sorted(expected)
    with open(os.path.join(REPO, "workflows", "svd_inbetween_gi.json")) as f:
        assert server.get("/api/workflow_templates/svd_inbetween/svd_inbetween_gi.json") == json.load(f)
    assert not [ln for ln in server.log().splitlines() if "IMPORT FAILED" in ln and "svd_inbetween" in ln]


def test_film_workflow_doubles_the_frame_rate(server):
    if not server.has_film:
        pytest.skip("this host has no FrameInterpolate (ComfyUI 0.33+)")
    import tiny_models
    from comfy_job import tiny_prompt, video_info
    with open(os.path.join(REPO, "workflows", "api", FILM + ".json")) as f:
        prompt = tiny_prompt(json.load(f), server.weights, tiny_models.TINY_FILM)
    entry = server.wait(server.queue(prompt))
    assert entry["status"]["status_str"] == "success", entry["status"]
    videos = [item for out in entry["outputs"].values() for item in out.get("images", [])]
    assert len(videos) == 1
    v = videos[0]
    info = video_info(os.path.join(server.base, "output", v.get("subfolder", ""), v["filename"]))
    assert info == {"frames": 9, "width": 64, "height": 64}  # 5 SVD frames, one FILM frame between each two


def test_eval_scores_film_next_to_trf_and_gi(server, tmp_path):
    if not server.has_film:
        pytest.skip("this host has no FrameInterpolate (ComfyUI 0.33+)")
    import csv

    import tiny_models
    from api_cli import tiny_workflow
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.eval import evaluate
    from test_host_eval import ground_truth, stand_in_scorers
    gt = str(tmp_path / "gt")
    ground_truth(gt)
    workflow = tiny_workflow(str(tmp_path / "tiny.json"), server.weights, steps=1, recurrence=0)
    out = str(tmp_path / "out")
    argv = ["eval", gt, "-o", out, "--workflow", workflow, "--server", server.url, "--no-progress",
            "--backward", server.weights, "--frames", "5", "--window", "5", "--width", "64", "--height", "64",
            "--pairs-per-video", "1", "--max-pairs", "1", "--film", tiny_models.TINY_FILM,
            "--mode", "trf", "--mode", "gi"]
    summary = evaluate(build_parser().parse_args(argv), stand_in_scorers())
    assert [s["variant"] for s in summary] == ["film", "trf", "gi"]  # the paper's columns, FILM first
    film = summary[0]
    assert film["pairs"] == 1 and film["frames"] == 5 and film["fid"] > 0
    with open(os.path.join(out, "clips.csv"), newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert (rows["film"]["frames"], rows["film"]["width"], rows["film"]["height"]) == ("5", "64", "64")
    # FILM keeps the keyframes: its first and last frame are the (fitted) ground truth's, up to PNG rounding
    assert float(rows["film"]["lpips_frames"].split()[0]) < 0.01 and float(rows["film"]["lpips_frames"].split()[-1]) < 0.01
    with open(os.path.join(out, "summary.md")) as f:
        assert "| film |" in f.read().replace("`", "")
    with pytest.raises(SystemExit, match="needs --film"):
        evaluate(build_parser().parse_args([*argv[:argv.index("--film")], "--mode", "film"]), stand_in_scorers())


@pytest.mark.every_host
def test_eval_film_refuses_what_the_host_cannot_run(server, tmp_path):
    """Before any generation: a host without FrameInterpolate is named as such; on one with it, a frame count FILM
    cannot make (frames - 1 no product of multipliers 2..16) is refused with examples of counts it can make."""
    from api_cli import tiny_workflow
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.eval import evaluate
    from test_host_eval import ground_truth, stand_in_scorers
    gt = str(tmp_path / "gt")
    ground_truth(gt)
    workflow = tiny_workflow(str(tmp_path / "tiny.json"), server.weights, steps=1, recurrence=0)
    frames = "5" if not server.has_film else "24"  # 23 is prime
    argv = ["eval", gt, "-o", str(tmp_path / "out"), "--workflow", workflow, "--server", server.url,
            "--no-progress", "--frames", frames, "--window", frames, "--width", "64", "--height", "64",
            "--max-pairs", "1", "--film", "tiny_film.safetensors", "--mode", "trf"]
    expected = ("missing node types FrameInterpolate, FrameInterpolationModelLoader \\(ComfyUI 0.33 and later ship "
                "them: update that ComfyUI\\)") if not server.has_film else "24 frames is not one"
    with pytest.raises(SystemExit, match=expected) as e:
        evaluate(build_parser().parse_args(argv), stand_in_scorers())
    assert not os.path.exists(tmp_path / "out" / "videos"), "a clip was generated before the refusal"
