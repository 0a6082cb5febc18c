"""Packaging: the built wheel holds everything the nodes, the frontend and the CLI read at run time,
and `svd-inbetween` works from a non-editable install outside the repository.

The wheel is built from a copy of the files git would carry (tracked and untracked, not ignored),
installed with --no-deps into a fresh venv that borrows the host venv's packages (torch, safetensors,
...) through a path entry, without their .pth files: the host venv's editable install of this pack is
not on that venv's path, so `svd_inbetween` can only come from the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from host import COMFYUI_PATH, REPO

HERE = os.path.dirname(os.path.abspath(__file__))
# Folders of data files that must ship whole (every file in them, at any depth).
DATA_DIRS = ("workflows", "subgraphs", "web")
NOT_PACKAGES = ("tests", "tools", "docs", "build", "dist")


def git_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and os.path.isfile(os.path.join(REPO, f)))


def runtime_files(files: list[str]) -> list[str]:
    """Repo-relative files the installed package must hold: the Python modules of every package, and
    every file under workflows/, subgraphs/ and web/."""
    packages = {os.path.dirname(f) for f in files if f.endswith("__init__.py")
                and f.split("/")[0] not in NOT_PACKAGES and not f.startswith(".")}
    out = []
    for f in files:
        if f.split("/")[0] in DATA_DIRS or (f.endswith(".py") and os.path.dirname(f) in packages):
            out.append(f)
    return out


def setuptools_is_new_enough() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """The wheel built from a clean copy of the sources (the build never writes into the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for f in git_files():
        os.makedirs(src / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), src / f)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "-w", str(tmp / "dist"), str(src)]
    if setuptools_is_new_enough():
        cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
    else:  # the isolated build fetches setuptools>=77, as `pip install -e .` did for this venv
        cmd.remove("--no-index")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list((tmp / "dist").glob("svd_inbetween-*.whl"))
    assert len(wheels) == 1, wheels
    return str(wheels[0])


def test_wheel_holds_every_runtime_file(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    expected = runtime_files(git_files())
    # the ones issue 16 found missing or new: API twins, help pages, the icon
    assert any(f.startswith("workflows/api/") for f in expected)
    assert "web/icon.png" in expected and "web/docs/SVDInbetweenSampler.md" in expected
    assert "subgraphs/Keyframes to Video (SVD Inbetween).json" in expected  # ComfyUI 0.33's blueprints
    missing = [f for f in expected if f"svd_inbetween/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if n.startswith("svd_inbetween/tests/")]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as z:
        text = z.read(meta).decode()
    import tomllib
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert f"Version: {version}\n" in text
    import svd_inbetween
    assert svd_inbetween.__version__ == version


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> str:
    """A fresh venv with the wheel installed (not editable); the host venv's packages on its path."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    py = str(root / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "host_packages.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # a path line: its own .pth files are not run
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
                           wheel], capture_output=True, text=True, timeout=600)
    if "no such option: --python" in proc.stderr:  # pip < 22.3
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                               "--prefix", str(root), wheel], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(root)


def run_in(venv: str, args: list[str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def installed_package(venv: str, cwd) -> str:
    proc = run_in(venv, [os.path.join(venv, "bin", "python"), "-c",
                         "import svd_inbetween, os; print(os.path.dirname(svd_inbetween.__file__))"], cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_installed_package_is_the_wheel_not_the_repo(venv, tmp_path):
    pkg = installed_package(venv, tmp_path)
    assert pkg.startswith(venv) and os.path.realpath(pkg) != os.path.realpath(REPO)
    assert not os.path.exists(os.path.join(pkg, "tests"))
    for f in ("workflows/api/svd_inbetween_gi.json", "web/docs/SVDInbetweenLoadBackwardWeights.md",
              "web/icon.png"):
        assert os.path.isfile(os.path.join(pkg, f)), f


def test_cli_help_from_the_installed_script(venv, tmp_path):
    script = os.path.join(venv, "bin", "svd-inbetween")
    assert os.path.isfile(script)
    for args in ([], ["run"], ["convert"], ["eval"]):
        proc = run_in(venv, [script, *args, "--help"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "usage: svd-inbetween" in proc.stdout
    run_help = run_in(venv, [script, "run", "--help"], tmp_path).stdout
    assert "--start" in run_help and "--end" in run_help


@pytest.mark.server
def test_tiny_run_from_the_installed_cli(venv, tmp_path):
    """`svd-inbetween run` as a user runs it, from the installed script, on the installed pack's own
    API workflow with the tiny test loader swapped in for the checkpoint loader."""
    sys.path.insert(0, HERE)
    from comfy_job import prepare_base, tiny_prompt, video_info

    work = tmp_path / "work"
    weights = prepare_base(str(work))
    pkg = installed_package(venv, tmp_path)
    with open(os.path.join(pkg, "workflows", "api", "svd_inbetween_gi.json")) as f:
        workflow = tiny_prompt(json.load(f), weights)
    wf = tmp_path / "tiny_workflow.json"
    wf.write_text(json.dumps(workflow))
    out = tmp_path / "clip.mp4"
    args = [os.path.join(venv, "bin", "svd-inbetween"), "run",
            "--start", str(work / "input" / "start.png"), "--end", str(work / "input" / "end.png"),
            "-o", str(out), "--workflow", str(wf),
            "--backward", str(work / "models" / "svd_inbetween" / weights),
            "--width", "64", "--height", "64", "--frames", "5", "--steps", "2",
            "--comfyui", COMFYUI_PATH, "--cpu", "--custom-nodes", os.path.join(HERE, "tiny_pack")]
    proc = run_in(venv, args, tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    assert video_info(str(out)) == {"frames": 5, "width": 64, "height": 64}
