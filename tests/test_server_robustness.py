"""Server robustness: load, concurrent clients, interrupts, memory budget, bad files, bad graphs.

Everything runs through the real ComfyUI server (main.py --cpu) with the tiny models of
tests/tiny_pack. Latents come back as SHA-256 digests from SVDInbetweenTestLatentDigest;
SVDInbetweenTestNonce feeds the sampler so that a repeated prompt really re-executes.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import pickle
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from host import REPO  # noqa: E402

pytestmark = pytest.mark.server

SAMPLER, NONCE, DIGEST = "6", "10", "11"
LOG_FALLBACK = "auto execution runs lowvram"
LOAD_CYCLE = (("gi", "batched"), ("ksampler", None), ("gi_no_finetune", "sequential"), ("trf", "auto"))


class Evil:
    """Unpickling this creates `path`: proof that a pickle was (not) executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return builtins.open, (self.path, "w")


# ---------------------------------------------------------------- prompts

class Prompts:
    """API prompts over the shipped workflow with tiny models; all share the loaders and conditioning."""

    def __init__(self, weights: str):
        from comfy_job import tiny_prompt
        with open(os.path.join(REPO, "workflows", "api", "svd_inbetween_gi.json")) as f:
            base = tiny_prompt(json.load(f), weights)
        for node_id in ("7", "8", "9"):  # decoding/saving video is not what these tests measure
            base.pop(node_id)
        base[SAMPLER]["inputs"]["latent_image"] = [NONCE, 0]
        base[NONCE] = {"class_type": "SVDInbetweenTestNonce", "inputs": {"latent": ["5", 4], "nonce": 0}}
        base[DIGEST] = {"class_type": "SVDInbetweenTestLatentDigest", "inputs": {"samples": [SAMPLER, 0], "name": ""}}
        self.base = base
        self.count = 0

    def make(self, mode: str = "gi", execution: str | None = "batched", seed: int = 1, **sampler) -> dict:
        """mode 'ksampler' = stock KSampler on the same loaded (stock) model."""
        self.count += 1
        p = json.loads(json.dumps(self.base))
        p[NONCE]["inputs"]["nonce"] = self.count
        p[DIGEST]["inputs"]["name"] = f"p{self.count:03d}_{mode}_{seed}"
        if mode == "ksampler":
            p[SAMPLER] = {"class_type": "KSampler", "inputs": {
                "model": ["1", 0], "seed": seed, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                "scheduler": "karras", "positive": ["5", 0], "negative": ["5", 1], "latent_image": [NONCE, 0],
                "denoise": 1.0}}
        else:
            p[SAMPLER]["inputs"].update(mode=mode, execution=execution, seed=seed, **sampler)
        return p


def digest(entry: dict) -> str:
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    return entry["outputs"][DIGEST]["latent"][0]["sha256"]


def run(server, prompt: dict, client_id: str = "svd-inbetween-tests") -> dict:
    return server.wait(server.queue(prompt, client_id), timeout=120)


def error_of(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error", json.dumps(entry)[:2000]
    errors = [d for ev, d in entry["status"]["messages"] if ev == "execution_error"]
    assert len(errors) == 1, entry["status"]["messages"]
    return errors[0]


def count_fallback_logs(server) -> int:
    return sum(LOG_FALLBACK in line for line in server.log().splitlines())


# ---------------------------------------------------------------- fixtures

def write_bad_files(folder: str, good: str, marker: str) -> dict[str, tuple[str, ...]]:
    """Bad weight files beside the good one; name -> what the error must say."""
    import torch
    from safetensors.torch import save_file

    import tiny_models
    from svd_inbetween.weights.format import read_backward_weights, save_backward_weights
    from svd_inbetween.weights.keymap import SUFFIXES, file_key, layers_from_comfy_config

    path = lambda name: os.path.join(folder, name)  # noqa: E731

    tensors, _ = read_backward_weights(path(good))
    pairs = {k[len("diffusion_model."):-len(".to_v.weight")]: (t, tensors[k.replace("to_v.weight", "to_out.0.weight")])
             for k, t in tensors.items() if k.endswith(".to_v.weight")}
    with open(path(good), "rb") as f:
        data = f.read()
    open(path("empty.safetensors"), "wb").close()
    with open(path("truncated.safetensors"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(path("pickle_ckpt.safetensors"), "wb") as f:
        pickle.dump({"state_dict": Evil(marker)}, f, protocol=4)
    torch.save({"w": Evil(marker)}, path("pickle_pt.safetensors"))
    torch.save({"w": Evil(marker)}, path("pickle_bin.safetensors"), _use_new_zipfile_serialization=False)
    save_backward_weights(path("int_dtype.safetensors"),
                          {p: (a.to(torch.int32), b.to(torch.int32)) for p, (a, b) in pairs.items()}, "absolute")
    save_backward_weights(path("wrong_shape.safetensors"),
                          {p: (a[:, :-1].contiguous(), b) for p, (a, b) in pairs.items()}, "absolute")
    layers = layers_from_comfy_config(tiny_models.unet_config())
    official_int, official_shape = {}, {}
    for layer in layers:
        for suffix, t in zip(SUFFIXES, pairs[layer.comfy]):
            official_int[file_key("diffusers", layer, suffix)] = t.to(torch.int16)
            official_shape[file_key("diffusers", layer, suffix)] = torch.cat([t, t]).contiguous()
    save_file(official_int, path("official_int16.safetensors"))
    save_file(official_shape, path("official_wrong_shape.safetensors"))
    return {
        "empty.safetensors": ("empty", "0 bytes"),
        "truncated.safetensors": ("truncated",),
        "pickle_ckpt.safetensors": ("pickle", "not opened"),
        "pickle_pt.safetensors": ("pickle", "not opened"),
        "pickle_bin.safetensors": ("pickle", "not opened"),
        "int_dtype.safetensors": ("dtype torch.int32", "expected a float"),
        "wrong_shape.safetensors": ("has shape", "expects"),
        "official_int16.safetensors": ("dtype I16", "expected a float"),
        "official_wrong_shape.safetensors": ("has shape", "expected"),
    }


@contextlib.contextmanager
def comfy_server(base: str, **env: str):
    """The real server with one intra-op thread: on 2 shared cores torch's default threading makes
    the tiny UNet ~10x slower (threads spin against the other processes)."""
    from server_harness import ComfyServer
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}.items():
            mp.setenv(key, value)
        server = ComfyServer(base).__enter__()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from comfy_job import prepare_base

    base = str(tmp_path_factory.mktemp("robust"))
    weights = prepare_base(base)
    marker = os.path.join(base, "PICKLE_WAS_EXECUTED")
    bad = write_bad_files(os.path.join(base, "models", "svd_inbetween"), weights, marker)
    with comfy_server(base) as server:
        yield {"server": server, "prompts": Prompts(weights), "bad": bad, "marker": marker, "base": base}


# ---------------------------------------------------------------- websocket

class WsListener:
    """Records (time, type, data) of every JSON message the server sends to one client_id."""

    def __init__(self, url: str, client_id: str):
        import aiohttp
        self.aiohttp = aiohttp
        self.url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
        self.events: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._listen(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "websocket did not connect"

    async def _listen(self):
        async with self.aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url) as ws:
                self.ws = ws
                self.ready.set()
                async for msg in ws:
                    if msg.type == self.aiohttp.WSMsgType.TEXT:
                        d = json.loads(msg.data)
                        with self.lock:
                            self.events.append((time.perf_counter(), d.get("type"), d.get("data") or {}))

    def find(self, kind: str, prompt_id: str) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, d) for t, k, d in self.events if k == kind and d.get("prompt_id") == prompt_id]

    def close(self):
        asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(10)
        self.thread.join(10)


# ---------------------------------------------------------------- tests

def test_twenty_prompts_alternating_samplers_no_growth_no_state(served, record_property):
    import psutil
    server, prompts = served["server"], served["prompts"]
    proc = psutil.Process(server.proc.pid)
    logs_before = count_fallback_logs(server)
    hashes, rss = [], []
    for i in range(1, 21):
        mode, execution = LOAD_CYCLE[(i - 1) % len(LOAD_CYCLE)]
        seed = 1000 + i
        if i == 18:
            seed = 1002  # same KSampler prompt as prompt 2
        if i == 20:
            (mode, execution), seed = LOAD_CYCLE[0], 1001  # same as prompt 1
        hashes.append(digest(run(server, prompts.make(mode, execution, seed))))
        rss.append(proc.memory_info().rss)
    mib = [r / 2**20 for r in rss]
    record_property("rss_mib", mib)
    print(f"RSS MiB after prompts 1..20: {[round(m, 1) for m in mib]}")
    assert hashes[19] == hashes[0], "prompt 20 differs from the identical prompt 1: state carried between prompts"
    assert hashes[17] == hashes[1], "stock KSampler gave different latents for the same prompt"
    assert len(set(hashes)) == 18, "different seeds/modes should give different latents"
    growth = (rss[19] - rss[1]) / rss[1]
    assert abs(growth) < 0.05, f"RSS after prompt 20 is {mib[19]:.1f} MiB vs {mib[1]:.1f} MiB after prompt 2"
    # plenty of free RAM here: auto stays batched and never logs the fall-back
    assert count_fallback_logs(server) == logs_before


def test_two_clients_queueing_at_once_get_their_serial_results(served):
    server, prompts = served["server"], served["prompts"]
    configs = {"client-a": [("gi", "batched", 11), ("trf", "sequential", 12), ("ksampler", None, 13)],
               "client-b": [("gi", "sequential", 21), ("gi_no_finetune", "auto", 22), ("gi", "batched", 11)]}
    serial = {(c, k): digest(run(server, prompts.make(*cfg[:2], seed=cfg[2])))
              for c, cfgs in configs.items() for k, cfg in enumerate(cfgs)}
    got: dict[tuple[str, int], str] = {}
    failures: list[str] = []
    barrier = threading.Barrier(len(configs))
    built = {c: [prompts.make(m, e, seed=s) for m, e, s in cfgs] for c, cfgs in configs.items()}

    def client(client_id: str):
        try:
            barrier.wait(10)
            ids = [server.queue(p, client_id) for p in built[client_id]]
            for k, pid in enumerate(ids):
                got[(client_id, k)] = digest(server.wait(pid, timeout=180))
        except Exception as e:  # noqa: BLE001  (reported below, with the client)
            failures.append(f"{client_id}: {e!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures
    assert got == serial
    assert serial[("client-a", 0)] == serial[("client-b", 2)]  # same prompt from either client


def test_interrupt_mid_recurrence_is_prompt_and_leaves_no_trace(served, record_property):
    server, prompts = served["server"], served["prompts"]
    client_id = "interrupter"
    reference = prompts.make("gi", "sequential", seed=5)
    before = digest(run(server, reference, client_id))
    ws = WsListener(server.url, client_id)
    try:
        steps = 40
        long_prompt = prompts.make("gi", "sequential", seed=6, steps=steps, recurrence=7, recurrence_ratio=1.0)
        pid = server.queue(long_prompt, client_id)
        deadline = time.time() + 120
        while len(ws.find("progress", pid)) < 2:  # inside step 2's recurrence passes
            assert time.time() < deadline, "no progress from the sampler"
            time.sleep(0.005)
        t_post = time.perf_counter()
        server.post("/interrupt", {"prompt_id": pid})
        entry = server.wait(pid, timeout=60)
        deadline = time.time() + 10
        while not ws.find("execution_interrupted", pid) and time.time() < deadline:
            time.sleep(0.01)
        progress = ws.find("progress", pid)
        ended = ws.find("execution_interrupted", pid)
    finally:
        ws.close()
    assert entry["status"]["status_str"] == "error"
    events = [ev for ev, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events and "execution_error" not in events, events
    assert ended and ended[0][1]["node_id"] == SAMPLER
    latency = ended[0][0] - t_post
    times = [t for t, _ in progress]
    step = [b - a for a, b in zip(times, times[1:]) if b < t_post]
    step_time = sorted(step)[len(step) // 2]
    after = [d["value"] for t, d in progress if t > t_post]
    record_property("interrupt_latency_s", latency)
    record_property("step_time_s", step_time)
    print(f"interrupt latency {latency * 1000:.0f} ms; one step (8 guided passes, 16 UNet calls) "
          f"{step_time * 1000:.0f} ms; progress {progress[-1][1]['value']}/{steps}")
    assert len(after) <= 1, f"steps kept running after the interrupt: {after}"
    assert progress[-1][1]["value"] < steps
    assert latency < step_time, f"interrupt took {latency:.3f} s, one step takes {step_time:.3f} s"
    # the next prompt on the same model is exactly as if the interrupted one never ran
    assert digest(run(server, prompts.make("gi", "sequential", seed=5), client_id)) == before


def test_auto_falls_back_to_lowvram_under_a_memory_budget(tmp_path):
    from comfy_job import prepare_base

    weights = prepare_base(str(tmp_path))
    prompts = Prompts(weights)
    with comfy_server(str(tmp_path), SVD_INBETWEEN_MEMORY_BUDGET_MB="1") as server:
        lowvram = digest(run(server, prompts.make("gi", "lowvram", seed=7)))
        assert count_fallback_logs(server) == 0
        auto = digest(run(server, prompts.make("gi", "auto", seed=7)))
        assert count_fallback_logs(server) == 1, "the fall-back is logged once per run"
        digest(run(server, prompts.make("trf", "auto", seed=8, recurrence=2)))
        lines = [ln for ln in server.log().splitlines() if LOG_FALLBACK in ln]
    assert auto == lowvram
    assert len(lines) == 2, lines
    assert "SVD_INBETWEEN_MEMORY_BUDGET_MB" in lines[0] and " 1 MiB" in lines[0], lines[0]


@pytest.mark.host
def test_memory_budget_option(monkeypatch):
    from svd_inbetween.samplers.execution import MemoryBudgetError, choose_execution, needed_bytes
    est = {"batched": 100 * 2**20, "sequential": 60 * 2**20, "lowvram": 20 * 2**20}  # traced peaks
    batched_mib = needed_bytes(est["batched"]) / 2**20
    free = 64 * 2**30
    monkeypatch.delenv("SVD_INBETWEEN_MEMORY_BUDGET_MB", raising=False)
    assert choose_execution("auto", free, est) == "batched"
    assert choose_execution("auto", 100 * 2**20, est) == "lowvram"
    monkeypatch.setenv("SVD_INBETWEEN_MEMORY_BUDGET_MB", str(batched_mib + 1))
    assert choose_execution("auto", free, est) == "batched"
    monkeypatch.setenv("SVD_INBETWEEN_MEMORY_BUDGET_MB", str(batched_mib - 1))
    assert choose_execution("auto", free, est) == "sequential"
    assert choose_execution("batched", free, est) == "batched"
    monkeypatch.setenv("SVD_INBETWEEN_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(MemoryBudgetError, match="SVD_INBETWEEN_MEMORY_BUDGET_MB='lots'"):
        choose_execution("auto", free, est)


def test_bad_weight_files_refused_before_sampling_nothing_unpickled(served):
    server, prompts = served["server"], served["prompts"]
    assert not os.path.exists(served["marker"])
    for name, expected in served["bad"].items():
        p = prompts.make("gi", "batched", seed=3)
        p["4"]["inputs"]["weights"] = name
        err = error_of(run(server, p))
        msg = err["exception_message"]
        assert err["node_type"] == "SVDInbetweenLoadBackwardWeights", (name, err["node_type"])
        assert SAMPLER not in err["executed"], f"{name}: the sampler ran"
        assert name in msg and all(s in msg for s in expected), (name, msg)
    assert not os.path.exists(served["marker"]), "a pickle was executed"
    # the payloads are live: unpickling the files themselves creates the marker
    import torch
    folder = os.path.join(served["base"], "models", "svd_inbetween")
    with open(os.path.join(folder, "pickle_ckpt.safetensors"), "rb") as f:
        pickle.load(f)["state_dict"].close()
    assert os.path.exists(served["marker"])
    os.remove(served["marker"])
    with open(os.path.join(folder, "pickle_pt.safetensors"), "rb") as f:  # a path ending .safetensors: torch
        torch.load(f, weights_only=False)["w"].close()                     # would hand it to safetensors
    assert os.path.exists(served["marker"])
    os.remove(served["marker"])
    assert digest(run(server, prompts.make("gi", "batched", seed=3)))


def test_bad_graphs_refused_clearly_and_server_keeps_serving(served):
    server, prompts = served["server"], served["prompts"]
    good = digest(run(server, prompts.make("gi", "batched", seed=4)))

    def variant(extra_nodes: dict, **sampler_inputs) -> dict:
        p = prompts.make("trf", "batched", seed=4)
        p.update(json.loads(json.dumps(extra_nodes)))
        p[SAMPLER]["inputs"].update(sampler_inputs)
        return p

    cond = lambda **kw: {"class_type": "SVDInbetweenConditioning",  # noqa: E731
                         "inputs": dict(prompts.base["5"]["inputs"], **kw)}
    other = {"class_type": "SVDInbetweenTestOtherModels", "inputs": {"name": "other"}}
    cases = {
        "sizes": (variant({"12": cond(width=72)}, positive_end=["12", 2], negative_end=["12", 3]),
                  ("positive_end", "72x64", "64x64")),
        "models": (variant({"13": other, "12": cond(clip_vision=["13", 1])}, positive_end=["12", 2],
                           negative_end=["12", 3]), ("positive_end", "32-wide", "has 64", "different models")),
        "other_model_conds": (variant({"13": other, "12": cond(clip_vision=["13", 1])}, **{
            k: ["12", i] for i, k in enumerate(("positive_start", "negative_start", "positive_end", "negative_end"))}),
            ("positive_start", "32 wide", "model expects 64", "CLIP vision")),
        "non_svd": (variant({"13": other}, model=["13", 0]), ("input 'model'", "Stable Video Diffusion")),
        "frames": (variant({"12": cond(video_frames=7)}, latent_image=["12", 4]),
                   ("latent_image", "7 frames", "made for 5")),
    }
    for case, (prompt, expected) in cases.items():
        err = error_of(run(server, prompt))
        msg = err["exception_message"]
        assert err["node_type"] == "SVDInbetweenSampler", (case, err["node_type"], msg)
        assert err["exception_type"].endswith("InbetweenInputError"), (case, err["exception_type"], msg)
        assert all(s in msg for s in expected), (case, msg)
    assert digest(run(server, prompts.make("gi", "batched", seed=4))) == good
