"""`svd-inbetween run`: the shipped full workflow, headless, inside ComfyUI in this process."""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..attention_patch.layers import BACKWARD_WEIGHT_MODES, MODE_HELP, MODES
from ..evaluation.data import IMAGE_EXTS
from ..samplers.execution import EXECUTIONS
from ..samplers.keyframes import RESIZE_MODES

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(PACK_DIR, "workflows", "api", "svd_inbetween_full.json")


@dataclass
class Pair:
    start: str
    end: str
    output: str


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="Generate the video between two keyframes (headless ComfyUI).",
                       description="Runs workflows/api/svd_inbetween_full.json in ComfyUI (COMFYUI_PATH) in-process.")
    src = p.add_argument_group("keyframes (one pair, or a batch)")
    src.add_argument("--start", help="start keyframe image")
    src.add_argument("--end", help="end keyframe image")
    src.add_argument("--pairs", help="CSV/text file, one 'start,end[,output]' per line (batch)")
    src.add_argument("--folder", help="folder of images: each consecutive pair (sorted by name) is one clip (batch)")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (single pair) or folder (batch)")
    p.add_argument("--mode", default="gi", choices=MODES, help="; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()))
    add_generation_args(p)
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or ~/ComfyUI)")
    p.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU")
    p.set_defaults(func=main)


def add_generation_args(p: argparse.ArgumentParser, seed_help: str | None = None,
                        resize_help: str | None = None) -> None:
    """Models and sampler settings shared by `run` and `eval` (paper defaults)."""
    p.add_argument("--checkpoint", required=True, help="SVD checkpoint .safetensors (e.g. svd_xt.safetensors)")
    p.add_argument("--backward", help="backward-motion weights .safetensors (needed for mode gi)")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=42, help=seed_help)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--recurrence", type=int, default=5)
    p.add_argument("--recurrence-ratio", type=float, default=0.5)
    p.add_argument("--forward-weight", type=float, default=0.5)
    p.add_argument("--execution", default="auto", choices=EXECUTIONS)
    p.add_argument("--motion-bucket-id", type=int, default=127)
    p.add_argument("--fps", type=int, default=7)
    p.add_argument("--resize", default="crop", choices=RESIZE_MODES, help=resize_help)


def collect_pairs(args) -> list[Pair]:
    given = [bool(args.start or args.end), bool(args.pairs), bool(args.folder)]
    if sum(given) != 1:
        raise SystemExit("svd-inbetween run: give --start and --end, or --pairs FILE, or --folder DIR")
    if args.start or args.end:
        if not (args.start and args.end):
            raise SystemExit("svd-inbetween run: --start and --end go together")
        pairs = [Pair(args.start, args.end, args.output)]
    elif args.pairs:
        pairs = []
        with open(args.pairs, newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                row = [c.strip() for c in row if c.strip()]
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise SystemExit(f"svd-inbetween run: {args.pairs} line {i + 1}: expected 'start,end[,output]'")
                out = row[2] if len(row) > 2 else f"{i:04d}.mp4"
                pairs.append(Pair(row[0], row[1], os.path.join(args.output, out)))
    else:
        images = sorted(f for f in os.listdir(args.folder) if f.lower().endswith(IMAGE_EXTS))
        if len(images) < 2:
            raise SystemExit(f"svd-inbetween run: {args.folder} holds fewer than two images")
        pairs = []
        for i, (a, b) in enumerate(zip(images, images[1:])):
            pairs.append(Pair(os.path.join(args.folder, a), os.path.join(args.folder, b),
                              os.path.join(args.output, f"{i:04d}_{os.path.splitext(a)[0]}.mp4")))
    for pair in pairs:
        for path in (pair.start, pair.end):
            if not os.path.isfile(path):
                raise SystemExit(f"svd-inbetween run: keyframe not found: {path}")
    return pairs


def build_prompt(args, checkpoint_name: str, backward_name: str | None, start_name: str, end_name: str) -> dict:
    with open(WORKFLOW) as f:
        prompt = json.load(f)
    by_class = {node["class_type"]: node for node in prompt.values()}
    ids = {node["class_type"]: nid for nid, node in prompt.items()}
    by_class["ImageOnlyCheckpointLoader"]["inputs"]["ckpt_name"] = checkpoint_name
    titles = {node.get("_meta", {}).get("title"): node for node in prompt.values()}
    titles["Start frame"]["inputs"]["image"], titles["End frame"]["inputs"]["image"] = start_name, end_name
    by_class["SVDInbetweenConditioning"]["inputs"].update(
        width=args.width, height=args.height, video_frames=args.frames, motion_bucket_id=args.motion_bucket_id,
        fps=args.fps, resize=args.resize)
    by_class["SVDInbetweenSampler"]["inputs"].update(
        seed=args.seed, steps=args.steps, cfg=args.cfg, mode=args.mode, recurrence=args.recurrence,
        recurrence_ratio=args.recurrence_ratio, forward_weight=args.forward_weight, execution=args.execution)
    by_class["CreateVideo"]["inputs"]["fps"] = float(args.fps)
    if backward_name:
        by_class["SVDInbetweenLoadBackwardWeights"]["inputs"]["weights"] = backward_name
    else:
        weights_id = ids["SVDInbetweenLoadBackwardWeights"]
        by_class["SVDInbetweenSampler"]["inputs"]["model"] = prompt[weights_id]["inputs"]["model"]
        del prompt[weights_id]
    return prompt


def run_pairs(session, args, pairs: list[Pair], workdir: str, transform=None) -> list[str]:
    """Run each pair through the session; `transform(prompt)` lets tests swap in tiny models."""
    import folder_paths
    input_dir = os.path.join(workdir, "input")
    os.makedirs(input_dir, exist_ok=True)
    folder_paths.set_input_directory(input_dir)
    folder_paths.set_output_directory(os.path.join(workdir, "output"))
    checkpoint = os.path.abspath(args.checkpoint)
    folder_paths.add_model_folder_path("checkpoints", os.path.dirname(checkpoint), is_default=True)
    backward = None
    if args.backward:
        backward = os.path.abspath(args.backward)
        folder_paths.add_model_folder_path("svd_inbetween", os.path.dirname(backward), is_default=True)
    written = []
    for i, pair in enumerate(tqdm(pairs, desc="clips", disable=len(pairs) < 2)):
        names = []
        for tag, path in (("start", pair.start), ("end", pair.end)):
            name = f"{i:04d}_{tag}{os.path.splitext(path)[1].lower()}"
            shutil.copyfile(path, os.path.join(input_dir, name))
            names.append(name)
        prompt = build_prompt(args, os.path.basename(checkpoint), backward and os.path.basename(backward), *names)
        if transform is not None:
            prompt = transform(prompt)
        result = session.run(prompt)
        video = [item for out in result.outputs.values() for item in out.get("images", [])][0]
        src = os.path.join(folder_paths.get_output_directory(), video.get("subfolder", ""), video["filename"])
        os.makedirs(os.path.dirname(os.path.abspath(pair.output)), exist_ok=True)
        shutil.move(src, pair.output)
        written.append(pair.output)
    return written


def main(args: argparse.Namespace) -> int:
    from .comfy_session import ComfySession
    pairs = collect_pairs(args)
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"svd-inbetween run: checkpoint not found: {args.checkpoint}")
    if args.backward and not os.path.isfile(args.backward):
        raise SystemExit(f"svd-inbetween run: backward weights not found: {args.backward}")
    if not args.backward and args.mode in BACKWARD_WEIGHT_MODES:
        raise SystemExit(f"svd-inbetween run: mode {args.mode} needs --backward WEIGHTS "
                         "(or use --mode gi_no_finetune, trf or vibid)")
    session = ComfySession(comfyui=args.comfyui, cpu=args.cpu)
    with tempfile.TemporaryDirectory(prefix="svd-inbetween-") as workdir:
        for path in run_pairs(session, args, pairs, workdir):
            print(path)
    return 0
