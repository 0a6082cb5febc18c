"""`svd-inbetween bench`: the one-model design against the research code's two-model scheme.

Prints a table per (mode, scheme), the full-size SVD-XT accounting, and as its last line
one JSON object keyed "<mode>/<scheme>" with unet_calls, wall_s, peak_bytes, map_bytes and
max_abs_diff (among others).
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
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--recurrence", type=int, default=5)
    p.add_argument("--recurrence-ratio", type=float, default=0.5)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs per scheme; wall time is their median")
    p.add_argument("--modes", default="gi,gi_no_finetune,trf", help="comma-separated: gi, gi_no_finetune, trf")
    p.add_argument("--schemes", default="reference,sequential,batched",
                   help="comma-separated; reference (the baseline, required), sequential, batched")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="GPU only: cap PyTorch's allocations (torch.cuda.set_per_process_memory_fraction), e.g. 16: "
                        "shows whether each scheme's peak, in the layout it uses on a big card, fits under it. "
                        "ComfyUI's own free-memory checks still see the whole card. A scheme that runs out is "
                        "reported, not fatal")
    p.add_argument("--full-size-accounting", dest="full_size", action=argparse.BooleanOptionalAction, default=True,
                   help="also print the SVD-XT 1024x576x25 FLOP / floor / memory accounting (meta device, ~10 s)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="accelerator peak used for the floor (default: H100 SXM bf16 dense)")
    p.set_defaults(func=run)


def setup_comfyui(path: str | None, cpu: bool) -> None:
    """Make ComfyUI importable; CPU mode when asked or when torch sees no GPU (before model_management loads)."""
    import torch

    from .comfy_session import ComfyUINotFound, prepare_comfyui
    try:
        prepare_comfyui(path, cpu or not torch.cuda.is_available())
    except ComfyUINotFound as e:
        raise SystemExit(f"svd-inbetween bench: {e}") from None


def run(args) -> int:
    setup_comfyui(args.comfyui, args.cpu)
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
