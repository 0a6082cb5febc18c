"""`svd-inbetween run` as a client of real ComfyUI servers (main.py --cpu on 127.0.0.1, tiny models):
a batch spread over three servers, a server SIGKILLed mid-prompt (with and without coming back),
Ctrl-C then a rerun that generates only what is missing, and the same latent from any server."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import time

import pytest

from api_cli import (TINY_FLAGS, cli, cli_command, failure, keyframes, last_status, leftovers, manifest,
                     prompts_run, tiny_workflow)

pytestmark = pytest.mark.server
VIDEO = {"frames": 5, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """Three servers with the pack, the tiny models and the same tiny backward weights."""
    from comfy_job import prepare_base
    from server_harness import ComfyServer
    servers, weights = [], None
    try:
        for i in range(3):
            base = str(tmp_path_factory.mktemp(f"server{i}"))
            weights = prepare_base(base)
            servers.append(ComfyServer(base).start())
        for s in servers:
            s.wait_ready()
        root = tmp_path_factory.mktemp("client")
        yield {"servers": servers, "weights": weights, "root": root,
               "workflow": tiny_workflow(str(root / "tiny.json"), weights)}
    finally:
        for s in servers:
            s.__exit__(None, None, None)


def urls(servers) -> list[str]:
    return [arg for s in servers for arg in ("--server", s.url)]


def videos(folder: str) -> dict[str, dict]:
    from comfy_job import video_info
    return {f: video_info(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".mp4")}


def kill_when_running(server, timeout: float = 120) -> None:
    """SIGKILL the server while it executes a prompt."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.get("/queue")["queue_running"]:
            time.sleep(0.3)
            if server.get("/queue")["queue_running"]:
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait(timeout=30)
                return
        time.sleep(0.05)
    raise AssertionError("the server never ran a prompt")


def restart(server):
    from server_harness import ComfyServer
    return ComfyServer(server.base, port=server.port).start()


def test_twelve_pairs_over_three_servers_each_video_once(farm, tmp_path):
    servers = farm["servers"]
    keys = os.path.dirname(keyframes(str(tmp_path / "keys"), 13)[0])
    out = str(tmp_path / "out")
    before = prompts_run(servers)
    t0 = time.perf_counter()
    proc = cli("run", "--folder", keys, "-o", out, "--workflow", farm["workflow"], *urls(servers), *TINY_FLAGS)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, failure(proc)
    got = videos(out)
    assert len(got) == 12 and all(v == VIDEO for v in got.values()), got
    records = manifest(out)
    last = last_status(records)
    assert sorted(last) == sorted(got) and all(r["status"] == "done" for r in last.values())
    assert collections.Counter(r["pair"] for r in records if r["status"] == "running") == {k: 1 for k in got}
    assert prompts_run(servers) - before == 12
    assert len({r["server"] for r in last.values()}) == 3, "least-loaded dispatch uses every idle server"
    assert not leftovers(out)
    assert "12 done, 0 failed" in proc.stdout
    overhead = [r["seconds"] - r["server_seconds"] for r in last.values() if r.get("server_seconds")]
    print(f"\n12 tiny pairs on 3 servers: {wall:.1f} s wall; client overhead per prompt "
          f"{1000 * sum(overhead) / len(overhead):.0f} ms (mean)")


def test_same_seed_same_latent_on_any_server(farm, tmp_path):
    from safetensors.torch import load_file
    a, b = keyframes(str(tmp_path / "keys"), 2, seed=3)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"{a},{b},one.mp4\n{a},{b},two.mp4\n")
    wf = tiny_workflow(str(tmp_path / "latent.json"), farm["weights"], save_latent=True)
    out = str(tmp_path / "out")
    proc = cli("run", "--pairs", pairs, "-o", out, "--workflow", wf, *urls(farm["servers"][1:]), *TINY_FLAGS)
    assert proc.returncode == 0, failure(proc)
    last = last_status(manifest(out))
    assert last["one.mp4"]["server"] != last["two.mp4"]["server"]
    assert last["one.mp4"]["seed"] == last["two.mp4"]["seed"] == 42
    latents = {k: load_file(os.path.join(out, next(f for f in r["files"] if f.endswith(".latent"))))["latent_tensor"]
               for k, r in last.items()}
    assert latents["one.mp4"].shape[0] == 5
    assert (latents["one.mp4"] == latents["two.mp4"]).all()
    other = str(tmp_path / "other.mp4")
    proc = cli("run", "--start", a, "--end", b, "-o", other, "--seed", "7", "--workflow", wf,
               *urls(farm["servers"][:1]), *TINY_FLAGS)
    assert proc.returncode == 0, failure(proc)
    rec = last_status(manifest(str(tmp_path)))["other.mp4"]
    assert rec["seed"] == 7
    seven = load_file(os.path.join(str(tmp_path), next(f for f in rec["files"] if f.endswith(".latent"))))
    assert not (seven["latent_tensor"] == latents["one.mp4"]).all()


def test_ctrl_c_then_rerun_generates_only_the_missing_pairs(farm, tmp_path):
    servers = farm["servers"]
    keys = os.path.dirname(keyframes(str(tmp_path / "keys"), 13, seed=5)[0])
    out = str(tmp_path / "out")
    wf = tiny_workflow(str(tmp_path / "slow.json"), farm["weights"], steps=4)
    # two in flight per server: Ctrl-C finds prompts both running and waiting in the servers' queues
    args = ["run", "--folder", keys, "-o", out, "--workflow", wf, *urls(servers), "--per-server", "2", *TINY_FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.isfile(os.path.join(out, "svd_inbetween_manifest.jsonl")) and \
                sum(r["status"] == "done" for r in manifest(out)) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    last = last_status(manifest(out))
    assert all(r["status"] in ("done", "interrupted") for r in last.values()), last
    interrupted = [r for r in last.values() if r["status"] == "interrupted"]
    assert interrupted
    # the interrupted prompts do not go on running on the servers
    by_name = {s.url: s for s in servers}  # servers are named scheme://host:port
    for rec in interrupted:  # the client confirmed each cancel before it exited
        server = by_name[rec["server"]]
        queue = server.get("/queue")
        assert not any(item[1] == rec["prompt_id"] for k in ("queue_running", "queue_pending") for item in queue[k])
        entry = server.get(f"/history/{rec['prompt_id']}").get(rec["prompt_id"])
        if entry is not None:  # it had started: it ended as interrupted, not as a finished clip
            assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]], entry["status"]
    done_before = {k for k, r in last.items() if r["status"] == "done"}
    assert not leftovers(out)
    before = prompts_run(servers)
    rerun = cli(*args)
    assert rerun.returncode == 0, failure(rerun)
    assert prompts_run(servers) - before == 12 - len(done_before)
    assert f"{12 - len(done_before)} done, 0 failed, {len(done_before)} already done" in rerun.stdout
    got = videos(out)
    assert len(got) == 12 and all(v == VIDEO for v in got.values())


def test_server_killed_mid_prompt_batch_completes_once(farm, tmp_path):
    servers = farm["servers"]
    keys = os.path.dirname(keyframes(str(tmp_path / "keys"), 13, seed=7)[0])
    out = str(tmp_path / "out")
    wf = tiny_workflow(str(tmp_path / "slow.json"), farm["weights"], steps=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli_command("run", "--folder", keys, "-o", out, "--workflow", wf, *urls(servers),
                                        *TINY_FLAGS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = servers[0]
    try:
        kill_when_running(victim)
    finally:
        stdout, stderr = proc.communicate(timeout=600)
    farm["servers"][0] = restart(victim)  # for the next test; comes up while nothing uses it
    assert proc.returncode == 0, f"{stdout}\n{stderr}"
    records = manifest(out)
    last = last_status(records)
    got = videos(out)
    assert len(got) == 12 and all(v == VIDEO for v in got.values()), got
    assert all(r["status"] == "done" for r in last.values())
    name = victim.url
    requeued = [r for r in records if r["status"] == "requeued" and r["server"] == name]
    assert requeued, "the killed server had a prompt in flight"
    for r in requeued:  # the killed pair was made by another server, once
        assert last[r["pair"]]["server"] != name
        assert sum(x["pair"] == r["pair"] and x["status"] == "done" for x in records) == 1
    assert not leftovers(out)
    assert "12 done, 0 failed" in stdout


def test_dead_server_is_readmitted_when_it_comes_back(farm, tmp_path):
    server = farm["servers"][0].wait_ready()
    keys = os.path.dirname(keyframes(str(tmp_path / "keys"), 4, seed=9)[0])
    out = str(tmp_path / "out")
    wf = tiny_workflow(str(tmp_path / "slow.json"), farm["weights"], steps=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli_command("run", "--folder", keys, "-o", out, "--workflow", wf, "--server", server.url,
                                        *TINY_FLAGS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        kill_when_running(server)
        farm["servers"][0] = server = restart(server)
    finally:
        stdout, stderr = proc.communicate(timeout=600)
    # the only server died mid-prompt: the batch can only finish through its re-admission
    assert proc.returncode == 0, f"{stdout}\n{stderr}"
    assert "back x1" in stdout
    got = videos(out)
    assert len(got) == 3 and all(v == VIDEO for v in got.values())
    assert any(r["status"] == "requeued" for r in manifest(out))
    assert not leftovers(out)
