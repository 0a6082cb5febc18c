"""Starting the real ComfyUI server (main.py) with this pack and the tiny test loader."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

from host import COMFYUI_PATH, REPO

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PACKS = {"svd_inbetween": REPO, "svd_inbetween_test_tiny": os.path.join(HERE, "tiny_pack")}


class ComfyServer:
    """`with ComfyServer(base) as server:`. `port` reuses a port (a restarted server); `packs` names the
    custom node folders linked into base/custom_nodes (default: this pack and the tiny test pack);
    `tls` = {"cert", "key", "ca"} (network_parts.make_certs) serves https (main.py --tls-certfile/--tls-keyfile)."""

    def __init__(self, base: str, port: int | None = None, packs: dict[str, str] | None = None,
                 tls: dict[str, str] | None = None):
        self.base = base
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._ssl = ssl.create_default_context(cafile=tls["ca"]) if tls else None
        self.log_path = os.path.join(base, "server.log")
        custom = os.path.join(base, "custom_nodes")
        os.makedirs(custom, exist_ok=True)
        for name, target in (PACKS if packs is None else packs).items():
            link = os.path.join(custom, name)
            if not os.path.exists(link):
                os.symlink(target, link)
        self.proc = None

    def start(self) -> "ComfyServer":
        """Launch main.py without waiting (see wait_ready); lets several servers boot in parallel."""
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", self.base, "--disable-auto-launch",
             *(["--tls-certfile", self.tls["cert"], "--tls-keyfile", self.tls["key"]] if self.tls else [])],
            cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT,
            # tiny models are overhead-bound: extra intra-op threads only fight the test process for 2 cores
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        return self

    def __enter__(self):
        return self.start().wait_ready()

    def wait_ready(self) -> "ComfyServer":
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI server exited early:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI server did not come up in 180 s:\n{self.log()}")

    def __exit__(self, *exc):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30, context=self._ssl) as r:
            return json.loads(r.read())

    def post(self, path: str, payload) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl) as r:
                body = r.read()
                return json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            return {"http_status": e.code, **json.loads(e.read() or b"{}")}

    def queue(self, prompt: dict, client_id: str = "svd-inbetween-tests") -> str:
        res = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
        if "prompt_id" not in res:
            raise AssertionError(f"/prompt refused the prompt: {res}")
        return res["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
