"""The `svd-inbetween` console command. Each subcommand lives in its own module
with `add_parser(subparsers)` registering a parser whose `func(args) -> int` runs it."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = ("run", "serve-check", "convert", "train", "bench", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svd-inbetween", description="Generative Inbetweening with SVD in ComfyUI.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
