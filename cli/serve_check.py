"""`svd-inbetween serve-check URL...`: can these servers run the batch? Per server: ComfyUI version,
whether this pack is loaded, the model files the workflow needs, and the queue length. Run it before a
long batch: a missing model then fails in seconds, not after an hour."""
from __future__ import annotations

import argparse
import asyncio

from ..attention_patch.modes import MODES
from .run import add_generation_args, build_prompt, fail
from ..client.transport import ServerAddress, add_transport_args

PACK_NODE = "SVDInbetweenSampler"


def add_parser(sub) -> None:
    p = sub.add_parser("serve-check", help="Check ComfyUI servers before a batch (version, pack, models, queue).",
                       description="For each server: its ComfyUI version, whether the svd_inbetween pack is loaded, "
                                   "whether it has every node type and model file the workflow needs, its queue.")
    p.add_argument("urls", nargs="+", metavar="URL", help="server, e.g. http://127.0.0.1:8188")
    p.add_argument("--mode", choices=MODES, help="sampler mode to check for (as `run --mode`)")
    add_generation_args(p)
    add_transport_args(p)
    p.set_defaults(func=main)


async def check_server(address: ServerAddress, prompt: dict, skip_nodes: tuple[str, ...]) -> dict:
    """One row of the table for a server."""
    from ..client.api_client import AccessDenied, ComfyClient, ServerLost
    from ..client.object_info import check_against_server
    client = ComfyClient(address, request_timeout=30)
    row = {"server": client.url, "version": "-", "pack": "-", "queue": "-", "ok": False}
    try:
        stats = await client.system_stats()
        row["version"] = str((stats.get("system") or {}).get("comfyui_version", "?"))
        info = await client.object_info()
        row["pack"] = "loaded" if PACK_NODE in info else "NOT LOADED"
        row["queue"] = str(await client.queue_length())
        problems = check_against_server(prompt, info, skip_nodes)
        row["problems"] = "; ".join(problems) or "ok: every node type and model file is there"
        row["ok"] = not problems
    except AccessDenied as e:
        row["problems"] = f"refused: {e}"
    except ServerLost as e:
        row["problems"] = f"unreachable: {e}"
    finally:
        await client.close()
    return row


async def check_all(addresses: list[ServerAddress], prompt: dict, skip_nodes: tuple[str, ...]) -> list[dict]:
    return list(await asyncio.gather(*(check_server(a, prompt, skip_nodes) for a in addresses)))


def table(rows: list[dict]) -> str:
    head = ("server", "version", "pack", "queue")
    cells = [head] + [tuple(r[k] for k in head) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for c, r in zip(cells, [None, *rows]):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)) + ("" if r is None else f"  {r['problems']}"))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .workflow import WorkflowError
    try:
        prompt, nodes, _ = build_prompt(args)
    except WorkflowError as e:
        raise fail(str(e)) from None
    from ..client.transport import TransportError, options_from_args, server_address
    try:
        servers = [server_address(u, options_from_args(args), where="serve-check") for u in args.urls]
    except TransportError as e:
        raise fail(str(e)) from None
    rows = asyncio.run(check_all(servers, prompt, nodes))
    print(table(rows))
    return 0 if all(r["ok"] for r in rows) else 1
