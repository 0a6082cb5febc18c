"""`svd-inbetween bench`: the one-model design against the research code's two-model scheme.

Prints a table per (mode, scheme), the full-size SVD-XT accounting, and as its last line
one JSON object keyed "<mode>/<scheme>" with unet_calls, wall_s, peak_bytes, map_bytes and
max_abs_diff (among others).

--cards: the memory of every workflow phase and what `auto` runs on 8..80 GB cards
(meta device, no run). --check-accounting: run each execution once and print its measured
peak next to the traced one (e.g. --arch full --dtype bf16 --width 512 --height 288
--frames 14 --steps 1 --recurrence 0 on a CPU). --wan: Anchor Frame Bridging against native first-last
frame on Wan 2.1 (model calls, wall time, Wan2.1-I2V-14B memory per call, which cards run it).
"""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the one-model design against the research scheme",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", default=None, help="ComfyUI checkout (default: $COMFYUI_PATH or ~/ComfyUI)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument("--arch", choices=("tiny", "full"), default="tiny",
                   help="tiny: SVD-XT's block structure at 1/10 width (default); full: the SVD-XT architecture "
                        "with random weights (GPU only in practice)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--frames", type=int, default=None,
                   help="default 5; --wan: the native clip's frames, 1 (mod 4); AFB's clips have one and two more "
                        "(default 81: 81 / 82 + 82 + 83, the authors' lengths; 21: 21 / 22 + 22 + 23, faster)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--recurrence", type=int, default=5)
    p.add_argument("--recurrence-ratio", type=float, default=0.5)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs per scheme; wall time is their median")
    p.add_argument("--modes", default="gi,gi_no_finetune,trf", help="comma-separated: gi, gi_no_finetune, trf")
    p.add_argument("--schemes", default="reference,sequential,batched,lowvram",
                   help="comma-separated; reference (the baseline, required), sequential, batched, lowvram")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="GPU only: cap PyTorch's allocations (torch.cuda.set_per_process_memory_fraction), e.g. 16: "
                        "shows whether each scheme's peak, in the layout it uses on a big card, fits under it. "
                        "ComfyUI's own free-memory checks still see the whole card. A scheme that runs out is "
                        "reported, not fatal")
    p.add_argument("--full-size-accounting", dest="full_size", action=argparse.BooleanOptionalAction, default=True,
                   help="also print the SVD-XT 1024x576x25 FLOP / floor / memory accounting (meta device, ~10 s)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="accelerator peak used for the floor (default: H100 SXM bf16 dense)")
    p.add_argument("--cards", action="store_true",
                   help="only print the per-phase memory of the GI workflow at 1024x576x25 and 768x432x25 (fp16) and "
                        "what auto runs on 8, 12, 16, 24, 40 and 80 GB cards (meta device, ~1-2 min on a CPU)")
    p.add_argument("--check-accounting", action="store_true",
                   help="instead of comparing schemes, run each of --schemes' executions (sequential, batched, "
                        "lowvram) once at the given size (gi) and print the measured peak memory next to the "
                        "traced accounting; uses ComfyUI's PyTorch attention, as the trace assumes, and on a CPU "
                        "a fixed 128 KiB glibc mmap threshold so that RSS follows live memory")
    p.add_argument("--schedules", action="store_true",
                   help="instead of comparing schemes, the modes side by side as a user runs them (vibid, mpd, "
                        "mpd_trf at 25 steps and cfg 1; gi at 50 steps, cfg 2, recurrence 5): UNet calls, videos and "
                        "wall/CPU time of one clip at --arch/--width/--height/--frames (median of --repeats) with "
                        "ratios against vibid, and (with --full-size-accounting) each mode's largest call in every "
                        "execution at SVD-XT 1024x576x25 fp16 for every mode (meta device, ~2-3 min on a CPU)")
    p.add_argument("--wan", action="store_true",
                   help="instead of the SVD schemes, Anchor Frame Bridging (forward + reverse + final pass, and with "
                        "the reverse pass stopped at 15/50 of the steps) against ComfyUI's WanFirstLastFrameToVideo: "
                        "model calls and evaluations per clip counted in the real graphs on a tiny random Wan 2.1 "
                        "I2V at --steps, cfg 5 (checked against the formula, and the formula at 50 steps), their "
                        "wall time (median of --repeats), and with --full-size-accounting the memory of one "
                        "Wan2.1-I2V-14B call at 832x480 (fp16, fp8; meta device) and what fits 12-80 GB cards. "
                        "Needs ComfyUI 0.8 or newer (~2-3 min on a 2-core CPU)")
    p.add_argument("--default-malloc", action="store_true",
                   help="with --check-accounting: keep glibc's default (dynamic) mmap threshold")
    p.set_defaults(func=run)


def setup_comfyui(path: str | None, cpu: bool) -> None:
    """Make ComfyUI importable; CPU mode when asked or when torch sees no GPU (before model_management loads)."""
    import torch

    from ..client.comfy_session import ComfyUINotFound, prepare_comfyui
    try:
        prepare_comfyui(path, cpu or not torch.cuda.is_available())
    except ComfyUINotFound as e:
        raise SystemExit(f"svd-inbetween bench: {e}") from None


def run(args) -> int:
    setup_comfyui(args.comfyui, args.cpu)
    if args.wan:
        return wan(args)
    args.frames = args.frames or 5
    if args.cards:
        from ..bench.workflow import SIZES, format_cards, workflow_accounting
        for line in format_cards([workflow_accounting(w, h, f) for w, h, f in SIZES]):
            print(line)
        return 0
    if args.check_accounting:
        return check(args)
    if args.schedules:
        return schedules(args)
    import comfy.utils

    from ..bench.fullsize import accounting, format_accounting
    from ..bench.runner import TOLERANCE, Settings, format_table, json_line, machine, passes, run_bench

    comfy.utils.PROGRESS_BAR_ENABLED = False
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    s = Settings(arch=args.arch, width=args.width, height=args.height, frames=args.frames, steps=args.steps,
                 recurrence=args.recurrence, recurrence_ratio=args.recurrence_ratio, cfg=args.cfg, seed=args.seed,
                 repeats=args.repeats, dtype=args.dtype, modes=modes,
                 schemes=tuple(x.strip() for x in args.schemes.split(",") if x.strip()),
                 memory_cap_gib=args.memory_cap_gib)
    try:
        results = run_bench(s)
    except ValueError as e:
        log.error("%s", e)
        return 2
    for line in format_table(s, results, machine()):
        print(line)
    if args.full_size:
        print()
        for line in format_accounting(accounting(peak_flops=args.peak_tflops * 1e12)):
            print(line)
    print(json_line(results))
    unchecked = [k for k, r in results.items() if not r["oom"] and r["max_abs_diff"] is None]
    if unchecked:
        log.warning("svd-inbetween bench: the reference ran out of memory, so %s were not checked against it",
                    ", ".join(unchecked))
    bad = [k for k, r in results.items() if not r["oom"] and r["max_abs_diff"] is not None and not passes(r, s.dtype)]
    if bad:
        log.error("svd-inbetween bench: %s differ from the reference by more than %g or are not repeatable",
                  ", ".join(bad), TOLERANCE[s.dtype])
    return 1 if bad else 0


def check(args) -> int:
    from ..bench.check import check_accounting, format_check, prepare
    fixed = prepare(args.default_malloc)
    import json

    import comfy.utils

    from ..bench.fullsize import OURS
    from ..bench.runner import Settings, machine

    comfy.utils.PROGRESS_BAR_ENABLED = False
    schemes = tuple(x.strip() for x in args.schemes.split(",") if x.strip() and x.strip() != "reference")
    s = Settings(arch=args.arch, width=args.width, height=args.height, frames=args.frames, steps=args.steps,
                 recurrence=args.recurrence, recurrence_ratio=args.recurrence_ratio, cfg=args.cfg, seed=args.seed,
                 repeats=1, dtype=args.dtype, modes=("gi",), schemes=schemes or OURS)
    try:
        results = check_accounting(s, s.schemes)
    except ValueError as e:
        log.error("%s", e)
        return 2
    for line in format_check(s, results, machine() + ("; glibc mmap threshold fixed at 128 KiB" if fixed else "")):
        print(line)
    print(json.dumps(results))
    return 0 if all(r["agrees"] for r in results.values()) else 1


def schedules(args) -> int:
    import comfy.utils

    from ..bench.runner import machine
    from ..bench.schedules import format_schedules, schedule_costs, schedule_memory

    comfy.utils.PROGRESS_BAR_ENABLED = False
    costs = schedule_costs(args.arch, args.width, args.height, args.frames, max(args.repeats, 1), args.seed)
    memory = schedule_memory() if args.full_size else None
    size = f"{args.arch} SVD UNet, {args.width}x{args.height}x{args.frames}, median of {max(args.repeats, 1)}"
    for line in format_schedules(costs, memory, machine(), size):
        print(line)
    return 0


def wan(args) -> int:
    import json

    from ..bench.runner import machine
    from ..bench.wan import WanBenchUnsupported, count_and_time, counts_match, format_counts

    n = args.frames or 81
    if n % 4 != 1 or n < 5:
        log.error("svd-inbetween bench --wan: --frames %d is no native first-last-frame count; use 1 (mod 4), "
                  "e.g. 21 or 81", n)
        return 2
    frames = {"native": n, "forward": n + 1, "reverse": n + 1, "final": n + 2}
    try:
        result = count_and_time(args.steps, args.width, args.height, max(args.repeats, 1), args.seed, frames)
    except WanBenchUnsupported as e:
        log.error("%s", e)
        return 2
    for line in format_counts(result, machine()):
        print(line)
    if args.full_size:
        from ..bench.wan_memory import cards, format_memory, wan_memory
        memory = wan_memory()
        result["memory"], result["cards"] = memory, cards(memory)
        print()
        for line in format_memory(memory, result["cards"]):
            print(line)
    print(json.dumps(result))
    bad = [k for k, ok in counts_match(result).items() if not ok]
    if bad:
        log.error("svd-inbetween bench --wan: the counted model calls of %s differ from the formula", ", ".join(bad))
    return 1 if bad else 0
