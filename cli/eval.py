"""`svd-inbetween eval`: generate in-betweens for keyframe pairs cut from ground-truth videos and score them as the
paper does (Sec. 5.1-5.2): FID over frames, FVD over clips, plus LPIPS, PSNR, SSIM against the true clip."""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile

from ..attention_patch.layers import FUSED_MODES
from .run import add_generation_args

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "lpips", "fid", "fvd")
MODES = FUSED_MODES
# per-variant overrides accepted in --mode MODE:key=value
VARIANT_KEYS = {"seed": int, "steps": int, "cfg": float, "recurrence": int, "recurrence_ratio": float,
                "forward_weight": float, "execution": str, "motion_bucket_id": int, "fps": int}
RECORDED = ("steps", "cfg", "recurrence", "recurrence_ratio", "forward_weight", "execution", "motion_bucket_id", "fps",
            "width", "height", "frames", "resize")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="Score in-betweens against ground-truth videos (FID, FVD, LPIPS, PSNR, SSIM).",
                       description="Cuts keyframe pairs from ground-truth videos, runs the pack's workflow for each "
                                   "mode, and writes clips.csv, summary.csv/.md, lpips_per_frame.png and sheets/.")
    gt = p.add_argument_group("ground truth and keyframe pairs")
    gt.add_argument("ground_truth", help="folder of videos (mp4, webm, ...) and/or folders of frames")
    gt.add_argument("--window", type=int, help="frames from start to end keyframe, both included (default: --frames)")
    gt.add_argument("--stride", type=int, help="frames between window starts (default: --window, no overlap)")
    gt.add_argument("--max-pairs", type=int, help="at most this many pairs in all (taken round-robin over videos)")
    gt.add_argument("--pairs-per-video", type=int, help="at most this many pairs from one video")
    gt.add_argument("--pairs", help="CSV 'source,start,end' per line (0-based frames, sources relative to the folder)")
    p.add_argument("-o", "--output", required=True, help="output folder; run again with the same folder to resume")
    p.add_argument("--mode", action="append", metavar="MODE[:key=value,...]",
                   help=f"variant to evaluate, repeatable: one of {', '.join(MODES)}, optionally with settings, e.g. "
                        "'gi:recurrence=0,cfg=2.5' (default: every mode the given weights allow)")
    add_generation_args(p, seed_help="the same seed for every pair and mode; recorded in clips.csv",
                        resize_help="how keyframes (and so the ground truth) are fitted to width x height")
    m = p.add_argument_group("metrics (weights are never downloaded: pass local files)")
    m.add_argument("--metrics", default=",".join(METRICS), help=f"comma list from {', '.join(METRICS)}")
    m.add_argument("--fid-weights", help="weights-inception-2015-12-05-6726825d.pth (torch-fidelity)")
    m.add_argument("--fvd-model", default="videomae", choices=("videomae", "i3d"),
                   help="videomae: content-debiased FVD (Ge et al. 2024, cited by the paper); i3d: classic FVD")
    m.add_argument("--fvd-weights", help="vit_g_hybrid_pt_1200e_ssv2_ft.pth (videomae) or i3d_pretrained_400.pt (i3d)")
    m.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"))
    m.add_argument("--lpips-weights", help="torchvision alexnet-owt-7be5be79.pth / vgg16-397923af.pth")
    m.add_argument("--metrics-device", help="device for the metric networks (default: cuda if available)")
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or ~/ComfyUI)")
    p.add_argument("--cpu", action="store_true", help="run ComfyUI (and the metrics) on the CPU")
    p.set_defaults(func=main)


def build_scorers(args):
    from ..evaluation.features import InceptionFeatures, LpipsDistance, VideoFeatures
    from ..evaluation.harness import Scorers
    wanted = metric_names(args)
    device = args.metrics_device
    if not device:
        import torch
        device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    return Scorers(
        lpips=LpipsDistance(args.lpips_net, args.lpips_weights, device) if "lpips" in wanted else None,
        frame_features=InceptionFeatures(args.fid_weights, device) if "fid" in wanted else None,
        clip_features=VideoFeatures(args.fvd_model, args.fvd_weights, device) if "fvd" in wanted else None)


def metric_names(args) -> set[str]:
    wanted = {s.strip() for s in args.metrics.split(",") if s.strip()}
    unknown = wanted - set(METRICS)
    if unknown:
        raise SystemExit(f"svd-inbetween eval: --metrics: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
    return wanted


def variants(args):
    from ..evaluation.harness import parse_variant
    specs = args.mode or (list(MODES) if args.backward else ["gi_no_finetune", "trf"])
    try:
        out = [parse_variant(s, VARIANT_KEYS, MODES) for s in specs]
    except ValueError as e:
        raise SystemExit(f"svd-inbetween {e}") from None
    if any(v.mode == "gi" for v in out) and not args.backward:
        raise SystemExit("svd-inbetween eval: mode gi needs --backward WEIGHTS (or evaluate gi_no_finetune / trf)")
    if len({v.label for v in out}) != len(out):
        raise SystemExit("svd-inbetween eval: the same --mode is given twice")
    return out


def pairs(args):
    from ..evaluation.data import EvalDataError, read_pair_list, select_pairs
    try:
        if args.pairs:
            return read_pair_list(args.pairs, args.ground_truth)
        return select_pairs(args.ground_truth, args.window or args.frames, args.stride, args.max_pairs,
                            args.pairs_per_video)
    except EvalDataError as e:
        raise SystemExit(f"svd-inbetween {e}") from None


def decode_node_id() -> str:
    from .run import WORKFLOW
    with open(WORKFLOW) as f:
        return next(nid for nid, node in json.load(f).items() if node["class_type"] == "VAEDecode")


def comfy_generator(session, args, workdir: str, transform=None):
    """Runs `svd-inbetween run`'s prompt for one pair and returns the decoded frames (not re-read from the mp4)."""
    from PIL import Image

    from .run import Pair as RunPair
    from .run import run_pairs
    decode = decode_node_id()
    keydir = os.path.join(workdir, "keys")
    os.makedirs(keydir, exist_ok=True)

    def generate(pair, variant, keys):
        run_args = argparse.Namespace(**vars(args))
        run_args.mode = variant.mode
        for k, v in variant.settings:
            setattr(run_args, k, v)
        paths = []
        for tag, frame in zip(("start", "end"), keys):
            paths.append(os.path.join(keydir, f"{pair.slug}_{tag}.png"))
            Image.fromarray(frame).save(paths[-1])
        video = os.path.join(args.output, "videos", variant.slug, pair.slug + ".mp4")
        run_pairs(session, run_args, [RunPair(paths[0], paths[1], video)], workdir, transform)
        images = session.node_output(decode)[0][0]
        settings = ";".join(f"{k}={getattr(run_args, k)}" for k in RECORDED)
        return images, {"seed": run_args.seed, "settings": settings}
    return generate


def fit_like_conditioning(args):
    """Ground truth resized the way SVDInbetweenConditioning resizes the keyframes."""
    import torch

    from ..samplers.keyframes import fit_image

    def fit(frames, width, height):
        t = torch.from_numpy(frames).float() / 255
        out = fit_image(t, width, height, args.resize)
        return (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return fit


def evaluate(args, session=None, transform=None, scorers=None) -> list[dict]:
    """The whole command; tests pass a session, a prompt transform (tiny models) and tiny extractors."""
    from ..evaluation.harness import Evaluation
    todo_variants, todo_pairs = variants(args), pairs(args)
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"svd-inbetween eval: checkpoint not found: {args.checkpoint}")
    if args.backward and not os.path.isfile(args.backward):
        raise SystemExit(f"svd-inbetween eval: backward weights not found: {args.backward}")
    scorers = scorers if scorers is not None else build_scorers(args)  # loads the metric networks
    if session is None:
        from .comfy_session import ComfySession
        session = ComfySession(comfyui=args.comfyui, cpu=args.cpu)
    os.makedirs(args.output, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="svd-inbetween-eval-") as workdir:
        run = Evaluation(todo_pairs, todo_variants, comfy_generator(session, args, workdir, transform), scorers,
                         args.output, args.frames, fit_like_conditioning(args))
        summary = run.run()
    if run.skipped:
        log.info("eval: resumed, %d clip(s) already scored in %s", len(run.skipped), args.output)
    return summary


def main(args: argparse.Namespace) -> int:
    from ..evaluation.features import MissingPackage, MissingWeights
    try:
        evaluate(args)
    except (MissingWeights, MissingPackage) as e:
        raise SystemExit(f"svd-inbetween {e}") from None
    with open(os.path.join(args.output, "summary.md")) as f:
        print(f.read())
    return 0
