"""What `svd-inbetween run` / `serve-check` say when something is wrong, through real servers on 127.0.0.1:
a workflow without keyframe nodes, a server without the pack, a missing model, a bad keyframe file,
ComfyUI's validation and node errors (never retried); and the private server started when no
--server is given (with the keyframe chain)."""
from __future__ import annotations

import json
import os
import re
import socket

import pytest

from api_cli import (HERE, TINY_FLAGS, cli, failure, keyframes, last_status, manifest, prompts_run,
                     tiny_workflow)

pytestmark = pytest.mark.server
VIDEO = {"frames": 5, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def pair_of_servers(tmp_path_factory):
    """One server with the pack and one with only the tiny test models (the pack not installed)."""
    from comfy_job import prepare_base
    from server_harness import PACKS, ComfyServer
    good_base, bare_base = (str(tmp_path_factory.mktemp(n)) for n in ("good", "bare"))
    weights = prepare_base(good_base)
    prepare_base(bare_base)
    good = ComfyServer(good_base).start()
    bare = ComfyServer(bare_base, packs={"svd_inbetween_test_tiny": PACKS["svd_inbetween_test_tiny"]}).start()
    try:
        good.wait_ready()
        bare.wait_ready()
        root = tmp_path_factory.mktemp("client")
        yield {"good": good, "bare": bare, "weights": weights, "base": good_base,
               "workflow": tiny_workflow(str(root / "tiny.json"), weights)}
    finally:
        good.__exit__(None, None, None)
        bare.__exit__(None, None, None)


def test_workflow_without_keyframe_nodes_fails_before_queueing(pair_of_servers, tmp_path):
    s = pair_of_servers
    with open(s["workflow"]) as f:
        prompt = json.load(f)
    for node in prompt.values():
        node.pop("_meta", None)
    untitled = tmp_path / "untitled.json"
    untitled.write_text(json.dumps(prompt))
    a, b = keyframes(str(tmp_path / "keys"), 2)
    before = prompts_run([s["good"]])
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", untitled,
               "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1
    assert "no node titled 'Start frame'" in proc.stderr and "--start-node" in proc.stderr, failure(proc)
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", untitled,
               "--start-node", "2", "--end-node", "Nope", "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1 and "--end-node: no node with id or title 'Nope'" in proc.stderr, failure(proc)
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", untitled,
               "--start-node", "2", "--end-node", "6", "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1 and "has no 'image' input" in proc.stderr, failure(proc)
    assert prompts_run([s["good"]]) == before
    assert not (tmp_path / "x.mp4").exists()


def test_server_without_the_pack(pair_of_servers, tmp_path):
    s = pair_of_servers
    keys = os.path.dirname(keyframes(str(tmp_path / "keys"), 4)[0])
    before = prompts_run([s["good"], s["bare"]])
    only_bare = cli("run", "--folder", keys, "-o", tmp_path / "a", "--workflow", s["workflow"],
                    "--server", s["bare"].url, *TINY_FLAGS)
    assert only_bare.returncode == 1, failure(only_bare)
    name = s["bare"].url  # servers are named scheme://host:port
    assert f"{name}: excluded: missing node types SVDInbetweenConditioning" in only_bare.stderr
    assert "the svd_inbetween pack is not loaded there" in only_bare.stderr
    both = cli("run", "--folder", keys, "-o", tmp_path / "b", "--workflow", s["workflow"],
               "--server", s["bare"].url, "--server", s["good"].url, *TINY_FLAGS)
    assert both.returncode == 0, failure(both)
    assert f"server {name} was not used: missing node types" in both.stdout
    last = last_status(manifest(str(tmp_path / "b")))
    assert len(last) == 3 and {r["server"] for r in last.values()} == {s["good"].url}
    assert prompts_run([s["good"], s["bare"]]) - before == 3
    check = cli("serve-check", s["good"].url, s["bare"].url, "--workflow", s["workflow"])
    assert check.returncode == 1, failure(check)
    good_row, bare_row = check.stdout.splitlines()[1:3]
    assert "loaded" in good_row and "ok: every node type and model file is there" in good_row
    assert "NOT LOADED" in bare_row and "missing node types" in bare_row


def test_missing_model_found_before_queueing(pair_of_servers, tmp_path):
    s = pair_of_servers
    check = cli("serve-check", s["good"].url, "--workflow", s["workflow"], "--backward", "nothere.safetensors")
    assert check.returncode == 1
    assert "model file 'nothere.safetensors'" in check.stdout and "is not on the server" in check.stdout
    assert re.search(r"\b0\.\d+\.\d+\b", check.stdout), check.stdout  # the server's version
    a, b = keyframes(str(tmp_path / "keys"), 2)
    before = prompts_run([s["good"]])
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", s["workflow"],
               "--backward", "nothere.safetensors", "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1 and "model file 'nothere.safetensors'" in proc.stderr, failure(proc)
    assert prompts_run([s["good"]]) == before


def test_bad_keyframe_fails_alone(pair_of_servers, tmp_path):
    s = pair_of_servers
    a, b, c, d = keyframes(str(tmp_path / "keys"), 4)
    broken = tmp_path / "keys" / "broken.png"
    broken.write_text("not a png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{a},{b},first.mp4\n{broken},{c},broken.mp4\n{c},{d},last.mp4\n")
    before = prompts_run([s["good"]])
    proc = cli("run", "--pairs", pairs, "-o", tmp_path / "out", "--workflow", s["workflow"],
               "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1, failure(proc)
    last = last_status(manifest(str(tmp_path / "out")))
    assert last["broken.mp4"]["status"] == "failed"
    assert f"keyframe {broken} is not an image Pillow can read" in last["broken.mp4"]["error"]
    assert last["first.mp4"]["status"] == last["last.mp4"]["status"] == "done"
    assert "FAILED broken.mp4: keyframe" in proc.stdout and "2 done, 1 failed" in proc.stdout
    assert prompts_run([s["good"]]) - before == 2
    from comfy_job import video_info
    assert video_info(str(tmp_path / "out" / "last.mp4")) == VIDEO


@pytest.mark.parametrize("setting, expect, accepted", [
    ("5.width=7", ("ComfyUI refused the prompt", "node 5 (SVDInbetweenConditioning)", "width"), 0),
    ('6.model=["1", 0]', ("node 6 (SVDInbetweenSampler) raised", "SVDInbetweenLoadBackwardWeights"), 1),
], ids=["validation", "node-raises"])
def test_comfyui_errors_are_reported_not_retried(pair_of_servers, tmp_path, setting, expect, accepted):
    s = pair_of_servers
    a, b = keyframes(str(tmp_path / "keys"), 2)
    before = prompts_run([s["good"]])
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", s["workflow"],
               "--set", setting, "--server", s["good"].url, *TINY_FLAGS)
    assert proc.returncode == 1, failure(proc)
    records = manifest(str(tmp_path))
    assert [r["status"] for r in records] == ["running", "failed"]  # one attempt, no re-queue
    for text in expect:
        assert text in records[-1]["error"], records[-1]["error"]
    assert prompts_run([s["good"]]) - before == accepted
    assert "FAILED x.mp4" in proc.stdout and not (tmp_path / "x.mp4").exists()


def test_private_server_for_a_keyframe_chain(pair_of_servers, tmp_path):
    """No --server: a server is started for the run (this pack + --custom-nodes), used, and stopped."""
    from comfy_job import video_info
    s = pair_of_servers
    keys = keyframes(str(tmp_path / "keys"), 3, seed=4)
    out = tmp_path / "chain.mp4"
    weights = os.path.join(s["base"], "models", "svd_inbetween", s["weights"])
    proc = cli("run", "--keyframes", *keys, "-o", out, "--workflow", s["workflow"], "--backward", weights,
               "--cpu", "--custom-nodes", os.path.join(HERE, "tiny_pack"), *TINY_FLAGS)
    assert proc.returncode == 0, failure(proc)
    url = re.search(r"private ComfyUI server at http://127\.0\.0\.1:(\d+) \(.*?; log (\S+)\)", proc.stderr)
    assert url, proc.stderr
    with pytest.raises(OSError):  # stopped at the end
        socket.create_connection(("127.0.0.1", int(url.group(1))), timeout=2).close()
    assert not os.path.exists(os.path.dirname(url.group(2)))
    segments = sorted(os.listdir(tmp_path / "chain_segments"))
    assert [f for f in segments if f.endswith(".mp4")] == ["0000_k00_k01.mp4", "0001_k01_k02.mp4"]
    assert video_info(str(out)) == {**VIDEO, "frames": 2 * 5 - 1}  # the shared keyframe frame once


def test_timeout_interrupts_and_requeues_within_the_retry_bound(pair_of_servers, tmp_path):
    s = pair_of_servers
    a, b = keyframes(str(tmp_path / "keys"), 2, seed=6)
    slow = tiny_workflow(str(tmp_path / "slow.json"), s["weights"], steps=30)
    proc = cli("run", "--start", a, "--end", b, "-o", tmp_path / "x.mp4", "--workflow", slow, "--server", s["good"].url,
               "--no-progress", "--timeout", "0.5", "--retries", "1")
    assert proc.returncode == 1, failure(proc)
    records = manifest(str(tmp_path))
    assert [r["status"] for r in records] == ["running", "requeued", "running", "failed"]
    assert "ran over --timeout 0.5 s" in records[1]["error"]
    assert records[-1]["error"].startswith("gave up after 2 attempts")
    queue = s["good"].get("/queue")
    held = {item[1] for key in ("queue_running", "queue_pending") for item in queue[key]}
    for rec in (records[0], records[2]):  # the client left no timed-out prompt running on the server
        assert rec["prompt_id"] not in held
        entry = s["good"].get(f"/history/{rec['prompt_id']}").get(rec["prompt_id"])
        if entry is not None:  # None: dropped from the queue before it started
            assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]], entry["status"]
    assert not (tmp_path / "x.mp4").exists()


def test_websocket_drop_mid_prompt_reconnects_and_keeps_the_prompt(pair_of_servers, tmp_path):
    """The websocket closes while the server still runs the prompt: the client reconnects, asks the server
    about the prompt and waits for it; nothing is re-queued or generated twice."""
    import asyncio

    from svd_inbetween.client.dispatch import Dispatcher, Settings
    from svd_inbetween.client.manifest import Manifest
    from svd_inbetween.client.transport import TransportOptions, server_address
    from svd_inbetween.cli.run import Pair, build_jobs
    from svd_inbetween.cli.workflow import keyframe_nodes, load_workflow
    s = pair_of_servers
    a, b = keyframes(str(tmp_path / "keys"), 2, seed=8)
    prompt = load_workflow(tiny_workflow(str(tmp_path / "slow.json"), s["weights"], steps=12))
    out = tmp_path / "out"
    m = Manifest(str(out))
    jobs = build_jobs([Pair(a, b, str(out / "x.mp4"))], prompt, keyframe_nodes(prompt), m)
    address = server_address(s["good"].url, TransportOptions())  # built by the command, as `run` does
    dispatcher = Dispatcher([address], m, Settings(progress=False, timeout=120))
    before = prompts_run([s["good"]])
    dropped = []

    async def drop_mid_prompt():
        run = asyncio.create_task(dispatcher.run_async(dispatcher.triage(jobs)))
        srv = dispatcher.servers[0]
        for _ in range(2400):
            if any(w.step for w in srv.in_flight.values()):
                dropped.append(srv.client.connections)
                await srv.client.ws.close()
                break
            await asyncio.sleep(0.05)
        await run
        return srv.client.connections

    connections = asyncio.run(drop_mid_prompt())
    assert dropped == [1] and connections == 2, (dropped, connections)
    assert jobs[0].status == "done", jobs[0].error
    assert [r["status"] for r in manifest(str(out))] == ["running", "done"]
    assert prompts_run([s["good"]]) - before == 1
    from comfy_job import video_info
    assert video_info(str(out / "x.mp4")) == VIDEO
