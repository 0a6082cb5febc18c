"""Running the three schemes side by side on one model, seed and input, and tabulating them."""
from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import asdict, dataclass, field, replace

import torch

from ..attention_patch.layers import with_proxies
from ..attention_patch.run_state import RUN_KEY
from .measure import PeakMemory, Stopwatch, UnetCounter, median
from .models import random_backward_weights, random_conds, svd_patcher
from .reference import REFERENCE_MODES, ReferenceScheme

log = logging.getLogger(__name__)

SCHEMES = ("reference", "sequential", "batched")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2}
NODE = "svd-inbetween bench"


@dataclass
class Settings:
    arch: str = "tiny"
    width: int = 64
    height: int = 64
    frames: int = 5
    steps: int = 4
    recurrence: int = 5
    recurrence_ratio: float = 0.5
    cfg: float = 2.0
    seed: int = 0
    repeats: int = 3
    dtype: str = "fp32"
    modes: tuple[str, ...] = REFERENCE_MODES
    schemes: tuple[str, ...] = field(default=SCHEMES)

    @property
    def fused_evaluations(self) -> int:
        return self.steps + self.recurrence * int(self.steps * self.recurrence_ratio)


@dataclass
class Run:
    samples: torch.Tensor
    wall_s: float
    cpu_s: float
    peak_bytes: int
    map_bytes: int
    unet_calls: int
    unet_videos: int


def _noop_callback(step, x0, x, total):
    pass


def run_reference(model, backward, mode: str, inputs, s: Settings, device) -> Run:
    ps, ns, pe, ne, latent = inputs
    with PeakMemory(device) as mem:
        scheme = ReferenceScheme(model, mode, backward)  # the second UNet is part of its memory
        with Stopwatch(device) as sw:
            out = scheme.sample(ps, ns, pe, ne, latent, s.seed, s.steps, s.cfg, s.recurrence, s.recurrence_ratio)
        calls, videos, maps = scheme.unet_calls, scheme.unet_videos, scheme.store.peak_bytes
        del scheme
    return Run(out, sw.seconds, sw.cpu_seconds, mem.peak_bytes, maps, calls, videos)


def run_ours(model, execution: str, mode: str, inputs, s: Settings, device) -> Run:
    from ..samplers.run import sample_inbetween

    ps, ns, pe, ne, latent = inputs
    counter = UnetCounter(s.frames, RUN_KEY)
    m = model.clone()
    m.set_model_unet_function_wrapper(counter)
    with PeakMemory(device) as mem, Stopwatch(device) as sw:
        out = sample_inbetween(NODE, m, ps, ns, pe, ne, latent, seed=s.seed, steps=s.steps, cfg=s.cfg, mode=mode,
                               recurrence=s.recurrence, recurrence_ratio=s.recurrence_ratio, forward_weight=0.5,
                               execution=execution, callback=_noop_callback)["samples"]
    maps = counter.run.peak_map_bytes if counter.run is not None else 0
    return Run(out, sw.seconds, sw.cpu_seconds, mem.peak_bytes, maps, counter.calls, counter.videos)


def run_bench(s: Settings, model=None, backward: dict | None = None) -> dict[str, dict]:
    """Every (mode, scheme) `s.repeats` times, interleaved so background load hits all alike.

    Returns {"<mode>/<scheme>": {...}}; max_abs_diff is against the reference of that mode.
    """
    import comfy.model_management

    if s.repeats < 1:
        raise ValueError(f"{NODE}: --repeats must be >= 1, got {s.repeats}")
    unknown = [m for m in s.modes if m not in REFERENCE_MODES]
    if not s.modes or unknown:
        raise ValueError(f"{NODE}: --modes must name some of {', '.join(REFERENCE_MODES)}, got {list(s.modes)}")
    if "reference" not in s.schemes:
        raise ValueError(f"{NODE}: the reference scheme is the baseline every other scheme is compared with")
    model = model if model is not None else svd_patcher(s.arch, DTYPES[s.dtype])
    backward = backward if backward is not None else random_backward_weights(model)
    model_gi = with_proxies(model, backward)
    inputs = random_conds(s.arch, s.width, s.height, s.frames, seed=s.seed + 1)
    device = comfy.model_management.get_torch_device()
    results: dict[str, dict] = {}
    # One short untimed pass per scheme first: lazy initialisation would otherwise land on whichever runs first.
    warm = replace(s, steps=1, recurrence=0)
    run_reference(model, backward, s.modes[0], inputs, warm, device)
    for name in s.schemes[1:]:
        run_ours(model_gi if s.modes[0] == "gi" else model, name, s.modes[0], inputs, warm, device)
    for mode in s.modes:
        ours_model = model_gi if mode == "gi" else model
        runs: dict[str, list[Run]] = {name: [] for name in s.schemes}
        for _ in range(s.repeats):
            for name in s.schemes:
                if name == "reference":
                    runs[name].append(run_reference(model, backward, mode, inputs, s, device))
                else:
                    runs[name].append(run_ours(ours_model, name, mode, inputs, s, device))
        ref = runs["reference"][0].samples.float()
        ref_wall = median([r.wall_s for r in runs["reference"]])
        ref_cpu = median([r.cpu_s for r in runs["reference"]])
        for name, rs in runs.items():
            first = rs[0]
            wall = median([r.wall_s for r in rs])
            results[f"{mode}/{name}"] = {
                "unet_calls": first.unet_calls, "unet_videos": first.unet_videos,
                "fused_evaluations": s.fused_evaluations,
                "wall_s": round(wall, 4), "wall_ratio": round(wall / ref_wall, 3),
                "wall_runs_s": [round(r.wall_s, 4) for r in rs],
                "cpu_s": round(median([r.cpu_s for r in rs]), 4),
                "cpu_ratio": round(median([r.cpu_s for r in rs]) / ref_cpu, 3),
                "peak_bytes": max(r.peak_bytes for r in rs), "map_bytes": max(r.map_bytes for r in rs),
                "max_abs_diff": (first.samples.float() - ref).abs().max().item(),
                "repeatable": all(torch.equal(r.samples, first.samples) for r in rs),
            }
            log.info("%s/%s: %s", mode, name, results[f"{mode}/{name}"])
    return results


def machine() -> str:
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def format_table(s: Settings, results: dict[str, dict], device_text: str) -> list[str]:
    cuda = "CUDA" in device_text or "NVIDIA" in device_text
    peak_label = "peak alloc MiB" if cuda else "peak RSS+ MiB"
    lines = [
        f"svd-inbetween bench on {device_text}",
        f"model: {s.arch} SVD UNet, {s.dtype}, {s.width}x{s.height}x{s.frames} frames, {s.steps} steps, recurrence "
        f"{s.recurrence} x {s.recurrence_ratio} -> {s.fused_evaluations} fused evaluations, cfg {s.cfg}, seed {s.seed}, "
        f"median of {s.repeats}",
        f"{'mode/scheme':<26} {'UNet calls':>10} {'videos':>6} {'wall s':>8} {'x ref':>6} {'CPU s':>8} "
        f"{'x ref':>6} {peak_label:>15} "
        f"{'maps KiB':>9} {'max|diff|':>10} ok",
    ]
    tol = TOLERANCE[s.dtype]
    for key, r in results.items():
        ok = r["max_abs_diff"] <= tol and r["repeatable"]
        lines.append(f"{key:<26} {r['unet_calls']:>10} {r['unet_videos']:>6} {r['wall_s']:>8.3f} "
                     f"{r['wall_ratio']:>6.2f} {r['cpu_s']:>8.3f} {r['cpu_ratio']:>6.2f} {r['peak_bytes'] / 2 ** 20:>15.1f} {r['map_bytes'] / 1024:>9.1f} "
                     f"{r['max_abs_diff']:>10.2e} {'yes' if ok else 'NO'}")
    lines.append(f"(wall s and CPU s: medians; CPU s = process CPU time of all threads, the work done even when "
                 f"other processes share the cores; ok: max|diff| vs reference <= {tol:g} and every repeat "
                 "bit-identical; "
                 + ("peak = torch.cuda.max_memory_allocated, weights included)" if cuda else
                    "peak RSS+ = peak process RSS above the RSS before the scheme: the loaded model is excluded, "
                    "the reference's second UNet copy is included)"))
    return lines


def json_line(results: dict[str, dict]) -> str:
    return json.dumps(results, sort_keys=False)


def settings_dict(s: Settings) -> dict:
    return asdict(s)
