"""Host: generated values for every pack node's inputs, through the real host (tests/fuzz_job.py in a subprocess),
end as the host's validation reject, the pack's input error or a run; and over HTTP a real server answers after each
of a few such prompts. SVD_INBETWEEN_FUZZ_EXAMPLES sets the examples per graph (CI: a fixed 25, derandomised)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = int(os.environ.get("SVD_INBETWEEN_FUZZ_EXAMPLES", "25"))


@pytest.mark.host
def test_generated_inputs_end_in_a_reject_an_input_error_or_a_run(tmp_path):
    job = {"kind": "fuzz", "base": str(tmp_path), "examples": EXAMPLES,
           "derandomize": "SVD_INBETWEEN_FUZZ_EXAMPLES" not in os.environ}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_job.py"), str(path)], capture_output=True,
                          text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT:")]
    assert proc.returncode == 0 and lines, f"job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    res = json.loads(lines[-1][len("RESULT:"):])
    print("outcomes per graph:", res["counts"], "; the pack's input errors by input:", res["inputs"])
    assert not res["failures"], "\n\n".join(f"{k}:\n{v}" for k, v in res["failures"].items())
    for kind, seen in res["counts"].items():  # each graph met the host's reject and reached the pack
        assert seen.get("reject") and seen.get("pack_error", 0) + seen.get("stopped", 0) + seen.get("ran", 0), (kind,
                                                                                                                seen)


def _bad_prompts(weights: str) -> dict:
    """The cases a shared server once failed on, in the fuzz's graphs, each with the input it must end on."""
    sys.path.insert(0, HERE)
    from fuzz_job import prompt_chain, prompt_conditioning
    base = dict(width=64, height=64, frames=5, motion_bucket_id=127, fps=7, augmentation=0.0, resize="crop", seed=0,
                steps=1, cfg=1.0, mode="vibid", recurrence=0, ratio=0.5, forward_weight=0.5, execution="auto",
                scheduler="karras", guidance="constant", min_cfg=1.0, cfg_pp=True, dds=True)
    cond = dict(base, image_w=64, image_h=64, use_weights=False, strength=1.0, weights=None)
    chain = dict(base, keyframes=[(64, 64)] * 3, frames_text="5")
    return {
        "huge chain frames": (prompt_chain(dict(chain, frames_text="9" * 40), weights), "frames"),
        "chain over the frame cap": (prompt_chain(dict(chain, frames_text="2049"), weights), "frames"),
        "extreme aspect crop": (prompt_conditioning(dict(cond, width=16384, height=64), weights),
                                "start_image"),
        "beyond any machine": (prompt_conditioning(dict(cond, width=16384, height=16384, frames=4096,
                                                        resize="stretch"), weights), "video_frames"),
        "frames over the node's max": (prompt_conditioning(dict(cond, frames=4097), weights), "video_frames"),
        "NaN cfg": (prompt_conditioning(dict(cond, cfg=float("nan")), weights), "cfg"),
    }


@pytest.mark.server
def test_a_real_server_answers_after_each_bad_prompt(tmp_path):
    """Over HTTP: each bad prompt is refused at /prompt (400, node errors) or ends as the pack's input error naming
    the input; the server answers /system_stats after each, and a good prompt still runs at the end."""
    from comfy_job import prepare_base
    from server_harness import ComfyServer
    weights = prepare_base(str(tmp_path))
    with ComfyServer(str(tmp_path)) as server:
        for name, (prompt, where) in _bad_prompts(weights).items():
            res = server.post("/prompt", {"prompt": json.loads(json.dumps(prompt)), "client_id": "fuzz"})
            if "prompt_id" not in res:  # the host's validation: 400 with the node and input
                assert res.get("http_status") == 400 and where in json.dumps(res.get("node_errors")), (name, res)
            else:
                entry = server.wait(res["prompt_id"], timeout=120)
                said = json.dumps(entry["status"]["messages"])
                assert entry["status"]["status_str"] == "error" and "InbetweenInputError" in said, (name, said[:2000])
                assert f"input '{where}'" in said, (name, said[:2000])
            assert "system" in server.get("/system_stats"), name
        good, _ = _bad_prompts(weights)["NaN cfg"]
        good["s"]["inputs"]["cfg"] = 1.0
        entry = server.wait(server.queue(good), timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
