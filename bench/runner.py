"""Running the three schemes side by side on one model, seed and input, and tabulating them."""
from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field, replace
from statistics import median

import torch

from ..attention_patch.layers import with_proxies
from ..samplers.schedule import fused_evaluations
from .measure import PeakMemory, Stopwatch, UnetCounter
from .models import random_backward_weights, random_conds, svd_patcher
from .reference import REFERENCE_MODES, ReferenceScheme

log = logging.getLogger(__name__)

SCHEMES = ("reference", "sequential", "batched", "lowvram")
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
    memory_cap_gib: float | None = None  # CUDA: torch.cuda.set_per_process_memory_fraction for the whole run

    @property
    def fused_evaluations(self) -> int:
        return fused_evaluations(self.steps, self.recurrence, self.recurrence_ratio)


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
    from ..samplers.settings import GenerationSettings, KeyframeConds

    ps, ns, pe, ne, latent = inputs
    counter = UnetCounter(s.frames)
    m = model.clone()
    m.set_model_unet_function_wrapper(counter)
    with PeakMemory(device) as mem, Stopwatch(device) as sw:
        settings = GenerationSettings(seed=s.seed, steps=s.steps, cfg=s.cfg, mode=mode, recurrence=s.recurrence,
                                      recurrence_ratio=s.recurrence_ratio, execution=execution)
        out = sample_inbetween(NODE, m, KeyframeConds(ps, ns, pe, ne), latent, settings,
                               callback=_noop_callback)["samples"]
    maps = counter.run.peak_map_bytes if counter.run is not None else 0
    return Run(out, sw.seconds, sw.cpu_seconds, mem.peak_bytes, maps, counter.calls, counter.videos)


def apply_memory_cap(gib: float | None, device) -> None:
    """Cap what PyTorch's allocator may hand this process on the GPU.

    ComfyUI's own free-memory checks (model loading, how many conds to batch, `auto`) still
    see the whole card, so under the cap each scheme runs the layout it runs on a big card:
    a pass shows that layout's peak fits; an out-of-memory does not prove that the scheme fails
    on a real smaller card, where ComfyUI would offload weights or split calls. The CUDA context
    and library workspaces outside the allocator are not counted against the cap."""
    if gib is None:
        return
    if torch.device(device).type != "cuda":
        raise ValueError(f"{NODE}: --memory-cap-gib needs a CUDA device (ComfyUI runs on {device})")
    total = torch.cuda.get_device_properties(device).total_memory
    if not 0 < gib * 2**30 <= total:
        raise ValueError(f"{NODE}: --memory-cap-gib {gib} must be > 0 and at most the card's "
                         f"{total / 2**30:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction(gib * 2**30 / total, device)
    log.info("%s: GPU allocations capped at %.2f GiB of %.1f GiB", NODE, gib, total / 2**30)


@dataclass(frozen=True)
class OutOfMemory:
    message: str


def _attempt(fn):
    """The run, or OutOfMemory if it ran out of GPU memory (a result under --memory-cap-gib, not a crash).

    Only the message is kept: the exception's traceback would keep the failed run's tensors alive."""
    import gc

    import comfy.model_management
    try:
        return fn()
    except torch.cuda.OutOfMemoryError as e:
        message = str(e).splitlines()[0] if str(e) else "CUDA out of memory"
    log.warning("%s: out of memory: %s", NODE, message)
    gc.collect()
    comfy.model_management.soft_empty_cache(True)
    return OutOfMemory(message)


def flops_per_video(s: Settings) -> int:
    """FLOPs of one stock UNet call of one video at the run's size (meta device, see fullsize.py)."""
    from .fullsize import count_flops
    from .models import svd_base_model
    unet = svd_base_model(s.arch, DTYPES[s.dtype], "meta").diffusion_model
    return count_flops(unet, s.arch, s.frames, s.height, s.width, DTYPES[s.dtype])[0]


def _summary(rs: list, ref: list, flops_video: int) -> dict:
    oom = next((r for r in rs if isinstance(r, OutOfMemory)), None)
    if oom is not None:
        return {"oom": True, "error": oom.message, "unet_calls": None, "unet_videos": None,
                "wall_s": None, "wall_ratio": None, "cpu_s": None, "cpu_ratio": None, "peak_bytes": None,
                "map_bytes": None, "achieved_tflops": None, "max_abs_diff": None, "repeatable": None}
    first = rs[0]
    wall = median([r.wall_s for r in rs])
    cpu = median([r.cpu_s for r in rs])
    ref_ok = not any(isinstance(r, OutOfMemory) for r in ref)
    ref_wall = median([r.wall_s for r in ref]) if ref_ok else None
    ref_cpu = median([r.cpu_s for r in ref]) if ref_ok else None
    return {
        "oom": False, "unet_calls": first.unet_calls, "unet_videos": first.unet_videos,
        "wall_s": round(wall, 4), "wall_ratio": round(wall / ref_wall, 3) if ref_ok else None,
        "wall_runs_s": [round(r.wall_s, 4) for r in rs],
        "cpu_s": round(cpu, 4), "cpu_ratio": round(cpu / ref_cpu, 3) if ref_ok else None,
        "peak_bytes": max(r.peak_bytes for r in rs), "map_bytes": max(r.map_bytes for r in rs),
        # stock-UNet FLOPs of the videos evaluated, per second (ours skip 1.8% of that in backward Q/K)
        "achieved_tflops": float(f"{first.unet_videos * flops_video / wall / 1e12:.4g}"),
        "max_abs_diff": (first.samples.float() - ref[0].samples.float()).abs().max().item() if ref_ok else None,
        "repeatable": all(torch.equal(r.samples, first.samples) for r in rs),
    }


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
    if ("reference" not in s.schemes or any(name not in SCHEMES for name in s.schemes)
            or len(set(s.schemes)) != len(s.schemes)):
        raise ValueError(f"{NODE}: --schemes must name reference (the baseline every other scheme is compared "
                         f"with) and any of {', '.join(SCHEMES[1:])}, each once, got {list(s.schemes)}")
    ours_schemes = [name for name in s.schemes if name != "reference"]
    device = comfy.model_management.get_torch_device()
    apply_memory_cap(s.memory_cap_gib, device)
    model = model if model is not None else svd_patcher(s.arch, DTYPES[s.dtype])
    backward = backward if backward is not None else random_backward_weights(model)
    model_gi = with_proxies(model, backward)
    inputs = random_conds(s.arch, s.width, s.height, s.frames, seed=s.seed + 1)
    flops_video = flops_per_video(s)
    results: dict[str, dict] = {}

    def once(name: str, mode: str, settings: Settings):
        if name == "reference":
            return _attempt(lambda: run_reference(model, backward, mode, inputs, settings, device))
        return _attempt(lambda: run_ours(model_gi if mode == "gi" else model, name, mode, inputs, settings, device))

    # One short untimed pass per scheme first: lazy initialisation would otherwise land on whichever runs first.
    warm = replace(s, steps=1, recurrence=0)
    for name in ("reference", *ours_schemes):
        once(name, s.modes[0], warm)
    for mode in s.modes:
        runs: dict[str, list] = {name: [] for name in s.schemes}
        for _ in range(s.repeats):
            for name in s.schemes:
                runs[name].append(once(name, mode, s))
        for name, rs in runs.items():
            results[f"{mode}/{name}"] = {"fused_evaluations": s.fused_evaluations,
                                         **_summary(rs, runs["reference"], flops_video)}
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


def passes(result: dict, dtype: str) -> bool:
    """Within the dtype's tolerance of the reference, and every repeat bit-identical."""
    return result["max_abs_diff"] <= TOLERANCE[dtype] and result["repeatable"]


def _cell(value, fmt: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def format_table(s: Settings, results: dict[str, dict], device_text: str) -> list[str]:
    cuda = "CUDA" in device_text or "NVIDIA" in device_text
    peak_label = "peak alloc MiB" if cuda else "peak RSS+ MiB"
    cap = f", GPU memory capped at {s.memory_cap_gib:g} GiB" if s.memory_cap_gib is not None else ""
    lines = [
        f"svd-inbetween bench on {device_text}",
        f"model: {s.arch} SVD UNet, {s.dtype}, {s.width}x{s.height}x{s.frames} frames, {s.steps} steps, recurrence "
        f"{s.recurrence} x {s.recurrence_ratio} -> {s.fused_evaluations} fused evaluations, cfg {s.cfg}, seed {s.seed}, "
        f"median of {s.repeats}{cap}",
        f"{'mode/scheme':<26} {'UNet calls':>10} {'videos':>6} {'wall s':>8} {'x ref':>6} {'CPU s':>8} "
        f"{'x ref':>6} {peak_label:>15} {'maps KiB':>9} {'TFLOP/s':>8} {'max|diff|':>10} ok",
    ]
    tol = TOLERANCE[s.dtype]
    for key, r in results.items():
        if r["oom"]:
            lines.append(f"{key:<26} OUT OF MEMORY: {r['error'][:120]}")
            continue
        ok = "n/a" if r["max_abs_diff"] is None else "yes" if passes(r, s.dtype) else "NO"
        lines.append(f"{key:<26} {r['unet_calls']:>10} {r['unet_videos']:>6} {r['wall_s']:>8.3f} "
                     f"{_cell(r['wall_ratio'], '.2f', 6)} {r['cpu_s']:>8.3f} {_cell(r['cpu_ratio'], '.2f', 6)} "
                     f"{r['peak_bytes'] / 2 ** 20:>15.1f} {r['map_bytes'] / 1024:>9.1f} "
                     f"{r['achieved_tflops']:>8.3f} {_cell(r['max_abs_diff'], '.2e', 10)} {ok}")
    lines.append(f"(wall s and CPU s: medians; CPU s = process CPU time of all threads, the work done even when "
                 f"other processes share the cores; TFLOP/s = stock-UNet FLOPs of the videos evaluated / wall s; "
                 f"ok: max|diff| vs reference <= {tol:g} and every repeat bit-identical; "
                 + ("peak = torch.cuda.max_memory_allocated, weights included)" if cuda else
                    "peak RSS+ = peak process RSS above the RSS before the scheme: the loaded model is excluded, "
                    "the reference's second UNet copy is included)"))
    return lines


def json_line(results: dict[str, dict]) -> str:
    return json.dumps(results, sort_keys=False)

