"""`svd-inbetween run/eval --server` over a real network, with real parts on 127.0.0.1: a ComfyUI server
started with --tls-certfile/--tls-keyfile (a private CA made by openssl at test time), Debian's nginx in
front of it asking for Basic auth or a bearer token (HTTP and the websocket), and a hostile proxy that
rewrites the server's answers. Every run is checked for secrets in what it printed or wrote, tracebacks,
and files outside its output folder."""
from __future__ import annotations

import os
import secrets

import pytest

from api_cli import TINY_FLAGS, cli, failure, keyframes, last_status, leftovers, manifest, prompts_run, tiny_workflow
from network_parts import HostileProxy, Nginx, files_under, make_certs, nginx_binary, secrets_found

pytestmark = pytest.mark.server
VIDEO = {"frames": 5, "width": 64, "height": 64}
USER = "svd-user"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """One TLS server; nginx and the hostile proxy in front of it."""
    from comfy_job import prepare_base
    from server_harness import ComfyServer
    certs = make_certs(str(tmp_path_factory.mktemp("certs")))
    base = str(tmp_path_factory.mktemp("tls_server"))
    weights = prepare_base(base)
    server = ComfyServer(base, tls=certs).start()
    parts = {"server": server, "certs": certs, "password": "pw-" + secrets.token_hex(8),
             "token": "tok-" + secrets.token_hex(12)}
    try:
        server.wait_ready()
        if nginx_binary():
            parts["nginx"] = Nginx(str(tmp_path_factory.mktemp("nginx")), server.url, USER, parts["password"],
                                   parts["token"])
        elif os.environ.get("SVD_INBETWEEN_REQUIRE_NGINX") == "1":
            raise RuntimeError("nginx is not installed (.ci/run installs Debian's nginx)")
        parts["hostile"] = HostileProxy(server.url, certs["ca"])
        parts["workflow"] = tiny_workflow(str(tmp_path_factory.mktemp("client") / "tiny.json"), weights)
        yield parts
    finally:
        for key in ("hostile", "nginx"):
            if key in parts:
                parts[key].close()
        server.__exit__(None, None, None)


def nginx(net) -> Nginx:
    if "nginx" not in net:
        pytest.skip("Debian's nginx is not installed (apt-get install nginx; .ci/run does it)")
    return net["nginx"]


def one_pair(net, tmp_path, *flags: str, env: dict | None = None, progress: bool = False):
    """Run one tiny pair into tmp_path/out; check what every run must: no secret printed or written, no
    traceback, no file outside the output folder, no partial file."""
    a, b = keyframes(str(tmp_path / "keys"), 2)
    out = tmp_path / "out"
    root = str(tmp_path)
    before = files_under(root)
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        proc = cli("run", "--start", a, "--end", b, "-o", out / "x.mp4", "--workflow", net["workflow"],
                   *(f for f in TINY_FLAGS if progress is False or f != "--no-progress"), *flags)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert "Traceback" not in proc.stderr, failure(proc)
    hidden = [net["password"], net["token"], "wrong-" + net["password"], "wrong-" + net["token"]]
    assert not secrets_found(hidden, [proc.stdout, proc.stderr], str(out)), failure(proc)
    outside = {f for f in files_under(root) - before if not f.startswith("out" + os.sep)}
    assert not outside, outside
    assert not os.path.exists("/tmp/escape_abs.png")
    assert not leftovers(str(out))
    return proc, str(out)


def files_of(out: str) -> set[str]:
    return files_under(out) - {"svd_inbetween_manifest.jsonl"}


def test_tls_server_needs_its_ca(net, tmp_path):
    server = net["server"]
    before = prompts_run([server])
    proc, out = one_pair(net, tmp_path, "--server", server.url)
    assert proc.returncode == 1, failure(proc)
    assert f"{server.url}: TLS certificate not trusted by the system trust store" in proc.stderr
    assert "pass --ca-cert FILE" in proc.stderr
    assert prompts_run([server]) == before

    servers = tmp_path / "servers.txt"
    servers.write_text(f"# the TLS server, with its CA\n{server.url} --ca-cert {net['certs']['ca']}\n")
    proc, out = one_pair(net, tmp_path, "--servers", servers)
    assert proc.returncode == 0, failure(proc)
    assert last_status(manifest(out))["x.mp4"]["server"] == server.url  # https://127.0.0.1:PORT
    from comfy_job import video_info
    assert video_info(os.path.join(out, "x.mp4")) == VIDEO

    os.remove(os.path.join(out, "x.mp4"))
    proc, out = one_pair(net, tmp_path, "--server", server.url, "--insecure")
    assert proc.returncode == 0, failure(proc)
    assert f"TLS CERTIFICATE CHECKS ARE OFF for {server.url} (--insecure)" in proc.stderr
    assert prompts_run([server]) == before + 2


def test_eval_over_https_with_ca_cert(net, tmp_path):
    from svd_inbetween.cli import build_parser
    from svd_inbetween.cli.eval import evaluate
    from test_host_eval import ground_truth, stand_in_scorers
    gt = str(tmp_path / "gt")
    ground_truth(gt)
    out = str(tmp_path / "eval")
    argv = ["eval", gt, "-o", out, "--workflow", net["workflow"], "--server", net["server"].url, "--ca-cert",
            net["certs"]["ca"], "--no-progress", "--frames", "5", "--window", "5", "--width", "64", "--height", "64",
            "--mode", "gi_no_finetune"]
    summary = evaluate(build_parser().parse_args(argv), stand_in_scorers())
    assert [s["pairs"] for s in summary] == [2]
    assert {r["server"] for r in manifest(out) if r["status"] == "done"} == {net["server"].url}


def test_basic_auth_and_bearer_token_through_nginx(net, tmp_path):
    proxy = nginx(net)
    host = f"127.0.0.1:{proxy.basic}"
    url = f"http://{USER}:{net['password']}@{host}"
    proc, out = one_pair(net, tmp_path, "--server", url, progress=True)
    assert proc.returncode == 0, failure(proc)
    assert "clips: 100%" in proc.stderr, proc.stderr  # the progress bar ran (and showed no password)
    assert last_status(manifest(out))["x.mp4"]["server"] == f"http://{host}"
    table = proc.stdout.splitlines()
    assert table[0].split()[:3] == ["server", "version", "state"] and table[1].startswith(f"http://{host} ")
    print("\nservers table of an authenticated run:\n" + "\n".join(table[:2]))
    # the websocket went through the proxy with the credentials too
    assert any('"GET /ws?clientId=' in line and '" 101 ' in line for line in proxy.access_log("basic"))
    check = cli("serve-check", url, "--workflow", net["workflow"])
    assert check.returncode == 0 and check.stdout.splitlines()[1].startswith(f"http://{host} "), failure(check)
    assert net["password"] not in check.stdout + check.stderr

    # a wrong password: that server is refused once and not asked again; the bearer server does the pair
    os.remove(os.path.join(out, "x.mp4"))
    servers = tmp_path / "servers.txt"
    servers.write_text(f"http://{USER}:wrong-{net['password']}@{host}\n"
                       f"{proxy.bearer_url} --header-env SVD_TEST_TOKEN\n")
    refused_before = sum('" 401 ' in line for line in proxy.access_log("basic"))
    proc, out = one_pair(net, tmp_path, "--servers", servers,
                         env={"SVD_TEST_TOKEN": f"Authorization: Bearer {net['token']}"})
    assert proc.returncode == 0, failure(proc)
    assert proc.stderr.count("answered HTTP 401") == 1, proc.stderr
    assert f"server http://{host} cannot be used: http://{host}: GET /system_stats answered HTTP 401" in proc.stderr
    assert sum('" 401 ' in line for line in proxy.access_log("basic")) == refused_before + 1
    assert f"server http://{host} was not used" in proc.stdout
    print("\nservers table with a refused password and a bearer token:\n" + proc.stdout)
    assert last_status(manifest(out))["x.mp4"]["server"] == proxy.bearer_url
    assert any('"GET /ws?clientId=' in line and '" 101 ' in line for line in proxy.access_log("bearer"))


def test_wrong_bearer_token_from_a_file_fails_once(net, tmp_path):
    proxy = nginx(net)
    token_file = tmp_path / "token"
    token_file.write_text(f"Authorization: Bearer wrong-{net['token']}\n")
    before = len(proxy.access_log("bearer"))
    proc, out = one_pair(net, tmp_path, "--server", proxy.bearer_url, "--header-file", token_file)
    assert proc.returncode == 1, failure(proc)
    assert f"{proxy.bearer_url}: GET /system_stats answered HTTP 401" in proc.stderr
    assert "headers Authorization" in proc.stderr and "not retried" in proc.stderr
    assert len(proxy.access_log("bearer")) == before + 1  # one request, no retry loop
    assert not os.path.exists(os.path.join(out, "x.mp4"))


@pytest.mark.parametrize("mode, expect", [
    ("foreign", None),
    ("ws_garbage", None),
    ("dotdot", "unsafe filename '../../../../escape.png'"),
    ("absolute", "unsafe filename '/tmp/escape_abs.png'"),
    ("huge", "larger than --max-download-mb 0.5 MiB"),
    ("invalid_json", "answered invalid JSON"),
    ("object_info", "answered a JSON list"),
    ("deny_prompt", "POST /prompt answered HTTP 403"),
    ("redirect", "answered a redirect (HTTP 302) to http://elsewhere.invalid:9"),
])
def test_hostile_answers_fail_the_clip_not_the_batch(net, tmp_path, mode, expect):
    """The hostile proxy is listed first, so the pair is tried there first; the real server (direct, https)
    is the second server where the clip may go after a refused answer."""
    hostile, server = net["hostile"], net["server"]
    hostile.mode = mode
    alone = mode in ("foreign", "ws_garbage")
    flags = ["--server", hostile.url, "--max-download-mb", "0.5", "--header-env", "SVD_TEST_TOKEN"]
    if not alone:
        flags += ["--server", server.url, "--ca-cert", net["certs"]["ca"]]
    try:
        proc, out = one_pair(net, tmp_path, *flags, env={"SVD_TEST_TOKEN": f"X-Token: {net['token']}"})
    finally:
        hostile.mode = None
    assert proc.returncode == 0, failure(proc)
    assert files_of(out) == {"x.mp4"}, files_of(out)
    records = manifest(out)
    last = last_status(records)["x.mp4"]
    assert last["status"] == "done"
    if mode == "foreign":
        assert f"{hostile.url}: the history names outputs of 3 node(s) the prompt does not have; ignored" in proc.stderr
    elif mode == "ws_garbage":
        assert "the websocket sent a message that is not ComfyUI's; ignored" in proc.stderr
    elif mode in ("object_info", "redirect"):
        assert f"server {hostile.url} cannot be used: {hostile.url}: " in proc.stderr and expect in proc.stderr
        assert last["server"] == server.url
        assert f"server {hostile.url} was not used" in proc.stdout
    elif mode == "deny_prompt":  # refused mid-batch: reported once, the pair goes to the other server
        assert proc.stderr.count(expect) == 2, proc.stderr  # the exclusion, and the pair's re-queue line
        assert f"server {hostile.url} cannot be used" in proc.stderr
        assert [r["server"] for r in records if r["status"] == "requeued"] == [hostile.url]
        assert last["server"] == server.url
    else:
        requeued = [r for r in records if r["status"] == "requeued"]
        assert len(requeued) == 1 and requeued[0]["server"] == hostile.url, records
        assert expect in requeued[0]["error"], requeued[0]["error"]
        assert last["server"] == server.url
