"""`svd-inbetween convert`: the official backward-motion release -> the pack's compact file."""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_NAME = "svd_reverse_motion_with_attnflip"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert the official backward-motion weights to the pack's compact format",
        description="Reads only the 32 fine-tuned tensors (16 temporal attn1 to_v / to_out.0) of the official "
                    "release (a diffusers UNet: the file, its unet/ folder or the pipeline folder) and writes a "
                    "small .safetensors for ComfyUI/models/svd_inbetween/.")
    p.add_argument("source", help="official unet/diffusion_pytorch_model.safetensors, or a folder holding it")
    p.add_argument("-o", "--output", required=True,
                   help="output .safetensors (a folder gets a default file name)")
    p.add_argument("--base", help="the checkpoint the weights were fine-tuned from (ComfyUI svd.safetensors or "
                                  "a diffusers SVD folder/file): write deltas W' - W_base instead of W'")
    p.add_argument("--fp16", action="store_true", help="store float16 (half the size)")
    p.set_defaults(func=run)


def default_file_name(delta: bool, fp16: bool) -> str:
    """The name `convert` gives its output in a folder; the shipped workflows load the name that README's
    convert command (--base, --fp16) writes."""
    return DEFAULT_NAME + ("_delta" if delta else "") + ("_fp16" if fp16 else "") + ".safetensors"


def output_path(args: argparse.Namespace) -> str:
    if not os.path.isdir(args.output):
        return args.output
    return os.path.join(args.output, default_file_name(bool(args.base), args.fp16))


def run(args: argparse.Namespace) -> int:
    from ..weights.convert import convert
    from ..weights.format import BackwardWeightsError

    out = output_path(args)
    try:
        done = convert(args.source, out, base=args.base, fp16=args.fp16)
    except BackwardWeightsError as e:
        print(f"svd-inbetween convert: error: {e}", file=sys.stderr)
        return 2
    params = sum(wv.numel() + wo.numel() for wv, wo in done.weights.values())
    dtype = "float16" if args.fp16 else "float32"
    print(f"wrote {out}: {done.kind} weights, {len(done.weights)} layers, {2 * len(done.weights)} tensors, "
          f"{params / 1e6:.1f}M params, {dtype}, {os.path.getsize(out) / 2**20:.1f} MiB")
    if done.kind == "delta":
        print(f"base: {done.metadata['base']} ({done.metadata.get('base_format')}); the loader adds these deltas "
              "to the SVD model it patches")
    print("put it in ComfyUI/models/svd_inbetween/ and pick it in SVDInbetweenLoadBackwardWeights")
    return 0
