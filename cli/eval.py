"""`svd-inbetween eval`: generate in-betweens for keyframe pairs cut from ground-truth videos and score them as the
paper does (Sec. 5.1-5.2): FID over frames, FVD over clips, plus LPIPS, PSNR, SSIM against the true clip."""
from __future__ import annotations

import argparse
import logging
import os

from ..attention_patch.modes import FUSED_MODES, MODES
from .film import FILM_MODE, multipliers
from .run import add_generation_args, add_server_args

log = logging.getLogger(__name__)
METRICS = ("psnr", "ssim", "lpips", "fid", "fvd")
# per-variant overrides accepted in --mode MODE:key=value
VARIANT_KEYS = {"seed": int, "steps": int, "cfg": float, "recurrence": int, "recurrence_ratio": float,
                "forward_weight": float, "execution": str, "motion_bucket_id": int, "fps": int}
# Wan rows: each runs its shipped workflow (the model files it names, or --wan-model) on the pair's keyframes
WAN_VARIANTS = {"wan_afb": "Anchor Frame Bridging on Wan2.1 I2V (workflows/api/wan_afb.json)",
                "wan_flf": "ComfyUI's native first-last frame on Wan2.1 FLF2V (workflows/api/wan_flf.json)"}
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
                        "'gi:recurrence=0,cfg=2.5' or 'mpd:steps=25,cfg=1' (the vibid and mpd modes' settings) "
                        f"(default: the fused modes the given weights allow, {', '.join(FUSED_MODES)}); "
                        f"'{FILM_MODE}' is the FILM baseline (needs --film); "
                        + "; ".join(f"'{k}': {v}" for k, v in WAN_VARIANTS.items())
                        + " (their clips are resampled in time to --frames, see docs/evaluation.md)")
    p.add_argument("--film", metavar="FILE", help="FILM weights for ComfyUI's FrameInterpolationModelLoader (ComfyUI "
                   "0.33+; e.g. film_net_fp16.safetensors): adds the FILM baseline row, the paper's Table 1 column. "
                   "A local file (its folder is given to a private server) or a name in the server's "
                   "models/frame_interpolation; never downloaded")
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
    add_server_args(p)
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
    specs = args.mode or (list(FUSED_MODES) if args.backward else ["gi_no_finetune", "trf"])
    if args.film and FILM_MODE not in [s.partition(":")[0] for s in specs]:
        specs = [FILM_MODE, *specs]  # the baseline first, as in the paper's table
    try:
        out = [parse_variant(s, VARIANT_KEYS, (*MODES, FILM_MODE, *WAN_VARIANTS)) for s in specs]
    except ValueError as e:
        raise SystemExit(f"svd-inbetween {e}") from None
    if any(v.mode == FILM_MODE for v in out):
        if not args.film:
            raise SystemExit(f"svd-inbetween eval: --mode {FILM_MODE} needs --film FILE (FILM weights for ComfyUI's "
                             "FrameInterpolationModelLoader; never downloaded)")
        try:
            multipliers(args.frames)
        except ValueError as e:
            raise SystemExit(f"svd-inbetween eval: --film: {e}") from None
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


def frames_source(prompt: dict) -> list:
    """The link to the decoded frames: what feeds CreateVideo, else VAEDecode's, else the chain's IMAGE."""
    for node in prompt.values():
        if node["class_type"] == "CreateVideo" and isinstance(node["inputs"].get("images"), list):
            return node["inputs"]["images"]
    for nid, node in prompt.items():
        if node["class_type"] in ("VAEDecode", "SVDInbetweenChain"):
            return [nid, 0]
    raise SystemExit("svd-inbetween eval: the workflow has no CreateVideo, VAEDecode or SVDInbetweenChain node "
                     "whose frames could be scored")


def client_generator(args, manifest, frames_dir: str):
    """(prepare, generate) for the evaluation harness: `prepare` queues every clip still to score on the
    servers at once (one job per pair and variant, like `svd-inbetween run`); `generate` returns one clip's
    frames, read from the PNGs an added SaveImage node wrote (lossless, unlike the mp4)."""
    import numpy as np
    from PIL import Image

    from ..client.dispatch import summary
    from .run import Pair as RunPair
    from .run import build_jobs, build_prompt, dispatch, exit_code
    from .workflow import WorkflowError, seed_of, settings_of
    done: dict = {}

    def prompt_for(variant):
        run_args = argparse.Namespace(**vars(args))
        if variant.mode == FILM_MODE:
            return film_prompt_for(run_args, variant)
        if variant.mode in WAN_VARIANTS:  # its own workflow; --frames cuts the ground truth, not the Wan clip
            run_args.mode, run_args.workflow, run_args.frames = None, variant.mode, None
            prompt, nodes, model_dirs = prompt_for_svd(run_args, variant)
            return with_frames_saved(prompt), nodes, model_dirs
        run_args.mode = variant.mode
        prompt, nodes, model_dirs = prompt_for_svd(run_args, variant)
        return with_frames_saved(prompt), nodes, model_dirs

    def film_prompt_for(run_args, variant):
        from .film import FOLDER, film_prompt
        from .run import model_value
        run_args.mode = None
        svd, keyframe_ids, model_dirs = prompt_for_svd(run_args, variant)
        size = settings_of(svd, ("width", "height", "fps"))
        if not all(isinstance(size.get(k), int) for k in ("width", "height")):
            raise SystemExit(f"svd-inbetween eval: {variant.label}: the workflow sets no width and height the FILM "
                             "row can fit its keyframes to (give --width and --height)")
        film_dirs: dict[str, str] = {}
        prompt = film_prompt(model_value(args.film, FOLDER, film_dirs), args.frames, size.get("fps", 7), keyframe_ids)
        # the size SVD's videos come out at: its latent is 1/8 of width x height
        fitted[variant.label] = (size["width"] // 8 * 8, size["height"] // 8 * 8)
        return with_frames_saved(prompt), keyframe_ids, {**model_dirs, **film_dirs}

    def prompt_for_svd(run_args, variant):
        for k, v in variant.settings:
            setattr(run_args, k, v)
        try:
            return build_prompt(run_args)
        except WorkflowError as e:
            raise SystemExit(f"svd-inbetween eval: {variant.label}: {e}") from None

    def with_frames_saved(prompt: dict) -> dict:
        prompt["svd_inbetween_eval_frames"] = {"class_type": "SaveImage", "inputs": {
            "images": frames_source(prompt), "filename_prefix": "svd_inbetween_eval/frames"}}
        return prompt

    fitted: dict[str, tuple[int, int]] = {}  # FILM rows get keyframes fitted as the pack's conditioning fits them
    fit = fit_like_conditioning(args)

    def prepare(todo) -> None:
        keydir = os.path.join(args.output, "keyframes")
        os.makedirs(keydir, exist_ok=True)
        jobs, model_dirs, nodes = [], {}, ()
        for variant in dict.fromkeys(v for _, v, _ in todo):
            prompt, nodes, dirs = prompt_for(variant)
            model_dirs.update(dirs)
            pairs = []
            for pair, v, keys in todo:
                if v != variant:
                    continue
                size = fitted.get(variant.label)
                paths = [os.path.join(keydir, f"{pair.slug}_{tag}{'_' + variant.slug if size else ''}.png")
                         for tag in ("start", "end")]
                for path, frame in zip(paths, keys):
                    Image.fromarray(fit(frame[None], *size)[0] if size else frame).save(path)
                pairs.append(RunPair(*paths, os.path.join(args.output, "videos", variant.slug, pair.slug + ".mp4")))
                done[(pair.id, variant.label)] = len(jobs) + len(pairs) - 1
            batch = build_jobs(pairs, prompt, nodes, manifest)
            for job in batch:
                job.extras_dir = os.path.join(frames_dir, variant.slug, os.path.splitext(os.path.basename(job.output))[0])
                job.meta["settings"] = ";".join(f"{k}={v}" for k, v in settings_of(job.prompt, RECORDED).items())
            jobs += batch
        if not jobs:
            return
        dispatcher = dispatch(args, jobs, manifest, model_dirs, nodes)
        print(summary(dispatcher, jobs))
        code = exit_code(jobs, dispatcher.stopping)
        if code:
            raise SystemExit(code)
        done["jobs"] = jobs

    def generate(pair, variant, keys):
        job = done["jobs"][done[(pair.id, variant.label)]]
        rec = manifest.last[job.key]
        pngs = sorted(os.path.join(manifest.folder, f) for f in rec["files"] if f.lower().endswith(".png"))
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
        for p in pngs:
            os.remove(p)  # scored clips need no frames; the manifest then regenerates them if asked again
        if pngs and not os.listdir(os.path.dirname(pngs[0])):
            os.rmdir(os.path.dirname(pngs[0]))
        import torch
        if variant.mode in WAN_VARIANTS:
            frames = frames[in_time(len(frames), args.frames)]
        return torch.from_numpy(frames).float() / 255, {"seed": seed_of(job.prompt), "settings": job.meta["settings"]}
    return prepare, generate


def in_time(generated: int, frames: int) -> list[int]:
    """Which of a Wan clip's `generated` frames stand for the ground truth's `frames`: evenly in time, the first and
    last (the keyframes) kept, as the ground truth's own window is cut (evaluation/data.py). A Wan clip (81-83 frames)
    spans the keyframe pair's whole window, as the AFB authors generate 82/83 frames between frames 0 and 24 of a
    25-frame clip."""
    from ..evaluation.data import even_indices
    if frames < 2 or generated < 2:
        return list(range(min(frames, generated)))
    return even_indices(0, generated - 1, frames)


def fill_from_workflow(args) -> None:
    """--frames and --resize, when not given, are the workflow's (they decide how the ground truth is cut)."""
    from .run import build_prompt
    from .workflow import WorkflowError, settings_of
    try:
        found = settings_of(build_prompt(argparse.Namespace(**{**vars(args), "mode": None}))[0], ("frames", "resize"))
    except WorkflowError as e:
        raise SystemExit(f"svd-inbetween eval: {e}") from None
    if args.frames is None:
        if "frames" not in found:
            raise SystemExit("svd-inbetween eval: pass --frames (the workflow has no frame count this tool knows)")
        args.frames = int(str(found["frames"]).split(",")[0])
    if args.resize is None:
        args.resize = found.get("resize", "crop")


def comfy_for_scoring(args) -> None:
    """The ground truth is resized with ComfyUI's own resize, as the keyframes are: make the local
    checkout importable (--comfyui or COMFYUI_PATH) when `svd-inbetween eval` runs outside ComfyUI."""
    try:
        import comfy.utils  # noqa: F401
    except ImportError:
        from ..client.comfy_session import ComfyUINotFound, prepare_comfyui
        try:
            prepare_comfyui(args.comfyui, cpu=True)
        except ComfyUINotFound as e:
            raise SystemExit(f"svd-inbetween eval: the ground truth is resized with ComfyUI's own resize, as the "
                             f"keyframes are, so it needs the local ComfyUI checkout: {e}") from None


def fit_like_conditioning(args):
    """Ground truth resized the way SVDInbetweenConditioning resizes the keyframes."""
    import torch

    from ..conditioning.keyframes import fit_image
    comfy_for_scoring(args)

    def fit(frames, width, height):
        t = torch.from_numpy(frames).float() / 255
        out = fit_image(t, width, height, args.resize)
        return (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return fit


def evaluate(args, scorers=None) -> list[dict]:
    """The whole command; tests pass tiny stand-in extractors as `scorers`."""
    from ..evaluation.harness import Evaluation
    from ..client.manifest import Manifest
    fill_from_workflow(args)
    todo_variants, todo_pairs = variants(args), pairs(args)
    scorers = scorers if scorers is not None else build_scorers(args)  # loads the metric networks
    os.makedirs(args.output, exist_ok=True)
    manifest = Manifest(args.output)
    prepare, generate = client_generator(args, manifest, os.path.join(args.output, "frames"))
    run = Evaluation(todo_pairs, todo_variants, generate, scorers, args.output, args.frames,
                     fit_like_conditioning(args), prepare=prepare)
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
