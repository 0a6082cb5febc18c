"""`svd-inbetween train`: backward-motion fine-tuning (paper Algorithm 1) from a ComfyUI SVD checkpoint.

One process per GPU under torchrun (DDP): `torchrun --standalone --nproc_per_node N --no-python
svd-inbetween train ...`; plain `svd-inbetween train` for one GPU or the CPU.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..weights.format import KINDS

log = logging.getLogger(__name__)

PRECISIONS = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="Fine-tune backward-motion weights (W_v'/W_o') on your own videos.",
                       description="Trains the 32 temporal attention tensors of the backward model as in the "
                                   "paper's Algorithm 1. Multi-GPU: torchrun --standalone --nproc_per_node N "
                                   "--no-python svd-inbetween train ...",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="ComfyUI single-file SVD checkpoint (svd.safetensors: "
                   "the 14-frame img2vid model the authors fine-tuned, or svd_xt.safetensors)")
    p.add_argument("--data", required=True, help="folder of videos (mp4/webm/...) and/or frame folders (png/jpg)")
    p.add_argument("-o", "--output", required=True, help="final weights .safetensors; checkpoints go beside it")
    p.add_argument("--steps", type=int, default=15000, help="optimizer steps in total (the paper: ~15k)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per step over ALL processes (the paper: 4)")
    p.add_argument("--micro-batch-size", type=int, default=1,
                   help="samples per forward pass on one process; the rest is gradient accumulation")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--frames", type=int, default=14, help="frames per clip (14 for svd, 25 for svd_xt)")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--stride", type=int, default=2,
                   help="take every Nth source frame (the authors: 2, 'double sampling rate')")
    p.add_argument("--resize", default="crop", choices=("crop", "stretch"),
                   help="crop: keep aspect, centre-crop; stretch: plain resize (the authors')")
    p.add_argument("--mixed-precision", default="fp16", choices=tuple(PRECISIONS),
                   help="dtype of the frozen model; trained tensors stay fp32 (fp16 uses a grad scaler)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass: "
                   "much less memory, one extra forward per sample (~25%% slower)")
    p.add_argument("--save-every", type=int, default=1000, help="write a checkpoint every N steps (0: only the end)")
    p.add_argument("--resume", help="a checkpoint .safetensors written by this command (its .train_state beside it)")
    p.add_argument("--kind", default="absolute", choices=KINDS,
                   help="save W' itself, or W' - W of the checkpoint (to transplant onto another SVD)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fps", type=int, default=7)
    p.add_argument("--motion-bucket-id", type=int, default=127)
    p.add_argument("--augmentation", type=float, default=0.02, help="conditioning noise augmentation")
    p.add_argument("--workers", type=int, default=2, help="data loading processes per GPU")
    p.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or ~/ComfyUI)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (slow; for trying things out)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def _init_distributed(cpu: bool):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process per GPU (nccl) or gloo on the CPU."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        torch.cuda.set_device(local_rank)  # before ComfyUI picks its device
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    return dist


def _check_sizes(args) -> None:
    if not os.path.isfile(args.checkpoint) or not args.checkpoint.endswith((".safetensors", ".sft")):
        raise SystemExit(f"svd-inbetween train: --checkpoint {args.checkpoint}: no such .safetensors file; give "
                         "the ComfyUI single-file SVD checkpoint (e.g. models/checkpoints/svd.safetensors)")
    if args.width % 64 or args.height % 64:
        raise SystemExit(f"svd-inbetween train: --width {args.width} --height {args.height}: both must be "
                         "multiples of 64 (the UNet downsamples the 1/8 latent three times)")
    if args.frames not in (14, 25):
        log.warning("svd-inbetween train: --frames %d; SVD was trained on 14 (svd) or 25 (svd_xt)", args.frames)


def main(args) -> int:
    import torch

    from ..weights.train import TrainConfig, train
    from ..weights.train_data import ClipDataset

    _check_sizes(args)
    dist = _init_distributed(args.cpu)
    try:
        from ..client.comfy_session import prepare_comfyui
        prepare_comfyui(args.comfyui, args.cpu)
        import comfy.sd
        dataset = ClipDataset(args.data, args.frames, args.width, args.height, args.stride, args.resize, args.seed)
        log.info("svd-inbetween train: %d videos in %s", len(dataset), args.data)
        dtype = getattr(torch, PRECISIONS[args.mixed_precision])
        model, _, vae, clip_vision = comfy.sd.load_checkpoint_guess_config(
            args.checkpoint, output_vae=True, output_clip=False, output_clipvision=True,
            model_options={"dtype": dtype})
        if model is None or clip_vision is None or vae is None:
            raise SystemExit(f"svd-inbetween train: {args.checkpoint} is not an SVD img2vid checkpoint "
                             "(need the UNet, the VAE and CLIP vision in one file, e.g. svd.safetensors)")
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, lr=args.lr,
            weight_decay=args.weight_decay, grad_clip=args.grad_clip, fps=args.fps,
            motion_bucket_id=args.motion_bucket_id, augmentation=args.augmentation,
            gradient_checkpointing=args.gradient_checkpointing, output=args.output, save_every=args.save_every,
            resume=args.resume, kind=args.kind, seed=args.seed, num_workers=args.workers,
            progress=not args.no_progress,
            metadata={"base": os.path.basename(args.checkpoint), "mixed_precision": args.mixed_precision})
        result = train(model, clip_vision, vae, dataset, config)
        if dist is None or dist.get_rank() == 0:
            print(f"svd-inbetween train: step {result.step}, weights in {args.output}")
    except ValueError as e:  # our errors name the option or file and the fix
        print(f"svd-inbetween train: {e}", file=sys.stderr)
        return 2
    finally:
        if dist is not None:
            dist.destroy_process_group()
    return 0
