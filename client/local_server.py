"""A private ComfyUI server for one run when no --server is given: COMFYUI_PATH's main.py on
127.0.0.1 and a free port, a temporary base directory whose custom_nodes/ holds this pack (plus
any --custom-nodes), the checkout's models and the folders of --checkpoint/--backward.
The run then talks to it like to any other server, and stops it at the end."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from .comfy_session import PACK_DIR, comfyui_path

log = logging.getLogger(__name__)
START_TIMEOUT = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comfyui_python(root: str) -> str:
    """The checkout's own virtual environment if it has one, else this interpreter."""
    for venv in (".venv", "venv"):
        for rel in (("bin", "python"), ("Scripts", "python.exe")):
            path = os.path.join(root, venv, *rel)
            if os.path.isfile(path):
                return path
    return sys.executable


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


def write_model_paths(path: str, root: str, model_dirs: dict[str, str]) -> None:
    """extra_model_paths YAML: every folder of <root>/models, then the folders of the given files."""
    lines = []
    models = os.path.join(root, "models")
    if os.path.isdir(models):
        lines += ["comfyui_checkout:", f"  base_path: {_yaml_str(models)}"]
        lines += [f"  {_yaml_str(name)}: {_yaml_str(name)}" for name in sorted(os.listdir(models))
                  if os.path.isdir(os.path.join(models, name))]
    if model_dirs:
        lines.append("svd_inbetween_cli:")
        lines += [f"  {_yaml_str(folder)}: {_yaml_str(d)}" for folder, d in model_dirs.items()]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


class LocalServer:
    """Context manager: `with LocalServer(...) as url:`."""

    def __init__(self, comfyui: str | None = None, cpu: bool = False, cuda_device: str | None = None,
                 custom_nodes: tuple[str, ...] = (), model_dirs: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.root = comfyui_path(comfyui)
        self.cpu, self.cuda_device = cpu, cuda_device
        self.custom_nodes = custom_nodes
        self.model_dirs = model_dirs or {}
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.url = ""

    def __enter__(self) -> str:
        self.base = tempfile.mkdtemp(prefix="svd-inbetween-server-")
        nodes_dir = os.path.join(self.base, "custom_nodes")
        os.makedirs(nodes_dir)
        for src in (PACK_DIR, *self.custom_nodes):
            src = os.path.abspath(src)
            name = "svd_inbetween" if src == PACK_DIR else os.path.basename(src.rstrip(os.sep))
            os.symlink(src, os.path.join(nodes_dir, name))
        paths = os.path.join(self.base, "extra_model_paths.yaml")
        write_model_paths(paths, self.root, self.model_dirs)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [comfyui_python(self.root), "main.py", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", self.base, "--extra-model-paths-config", paths, "--disable-auto-launch",
               *(["--cpu"] if self.cpu else []),
               *(["--cuda-device", str(self.cuda_device)] if self.cuda_device is not None else []),
               *self.extra_args]
        self.log_path = os.path.join(self.base, "server.log")
        log.info("starting a private ComfyUI server at %s (%s; log %s)", self.url, self.root, self.log_path)
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the private ComfyUI server exited (code {self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"the private ComfyUI server did not answer within {START_TIMEOUT:g} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # own session: Ctrl-C in the terminal does not reach it first
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
