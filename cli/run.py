"""`svd-inbetween run`: a client of ComfyUI's HTTP/websocket API. Keyframe pairs become prompts of an
API-format workflow (default: the shipped svd_inbetween_gi workflow) spread over one or more servers; with no
--server, a private server is started for the run and stopped at the end (the same code path)."""
from __future__ import annotations

import argparse
import csv
import logging
import os
from dataclasses import dataclass

from ..attention_patch.modes import BACKWARD_WEIGHT_MODES, MODE_HELP, MODES
from ..samplers.execution import EXECUTIONS
from ..conditioning.keyframes import IMAGE_EXTS, RESIZE_MODES
from ..client.comfy_session import PACK_DIR
from ..client.transport import ServerAddress, add_transport_args
from ..templates import RENAMED

log = logging.getLogger(__name__)
SHIPPED = os.path.join(PACK_DIR, "workflows", "api")
WORKFLOW = os.path.join(SHIPPED, "svd_inbetween_gi.json")
GENERATION_FLAGS = ("width", "height", "frames", "steps", "seed", "cfg", "mode", "recurrence", "recurrence_ratio",
                    "forward_weight", "execution", "motion_bucket_id", "fps", "resize")
MODEL_FOLDERS = {"checkpoint": "checkpoints", "backward": "svd_inbetween", "wan_model": "diffusion_models"}
MODE_FLAG_HELP = ("sampler mode; in a shipped workflow it also sets the mode's own steps and cfg unless --steps / "
                  "--cfg are given (a workflow of your own keeps its values): "
                  + "; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()))


@dataclass
class Pair:
    start: str
    end: str
    output: str


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="Generate in-betweens through ComfyUI servers (or a private one).",
                       description="Queues an API-format workflow per keyframe pair on ComfyUI servers through their "
                                   "HTTP/websocket API. Without --server, starts a private server (COMFYUI_PATH).")
    src = p.add_argument_group("keyframes (one pair, or a batch)")
    src.add_argument("--start", help="start keyframe image")
    src.add_argument("--end", help="end keyframe image")
    src.add_argument("--pairs", help="CSV/text file, one 'start,end[,output]' per line (batch; output relative to -o)")
    src.add_argument("--folder", help="folder of images: each consecutive pair (sorted by name) is one clip (batch)")
    src.add_argument("--keyframes", nargs="+", metavar="IMAGE",
                     help="keyframes in order: one clip per consecutive pair (a batch), joined into -o")
    p.add_argument("-o", "--output", required=True,
                   help="output .mp4 (--start/--end, --keyframes) or folder (--pairs, --folder)")
    p.add_argument("--mode", choices=MODES, help=MODE_FLAG_HELP)
    add_generation_args(p)
    add_server_args(p)
    p.set_defaults(func=main)


def add_generation_args(p: argparse.ArgumentParser, seed_help: str | None = None,
                        resize_help: str | None = None) -> None:
    """Workflow, models and sampler settings shared by `run`, `eval` and `serve-check`. A setting that is not
    given keeps the workflow's value (the shipped workflows hold the paper's defaults)."""
    w = p.add_argument_group("workflow (settings not given keep the workflow's values)")
    w.add_argument("--workflow", metavar="NAME_OR_PATH",
                   help="API-format workflow: a file, or the name of a shipped one (e.g. svd_inbetween_vibid; "
                        "the names before the renames load their new files) (default: svd_inbetween_gi)")
    w.add_argument("--start-node", help="id or title of the LoadImage node for the start keyframe (default: "
                                        "the node titled 'Start frame')")
    w.add_argument("--end-node", help="... for the end keyframe (default: the node titled 'End frame')")
    w.add_argument("--set", action="append", default=[], metavar="NODE.input=VALUE",
                   help="set any input; NODE is a node id or title, VALUE is JSON or a string (repeatable)")
    w.add_argument("--checkpoint", help="SVD checkpoint: a local file (its folder is given to a private server) or "
                                        "a name the server lists under models/checkpoints (shipped: svd_xt.safetensors)")
    w.add_argument("--backward", help="backward-motion weights (file or server-side name) for modes gi/vibid_gi")
    w.add_argument("--wan-model", help="Wan diffusion model for the Wan workflows (wan_afb, wan_keyframes: an I2V "
                                       "model; wan_flf: the FLF2V model): a local file or a name under "
                                       "models/diffusion_models")
    w.add_argument("--width", type=int, help="video width (shipped: 1024)")
    w.add_argument("--height", type=int, help="video height (shipped: 576)")
    w.add_argument("--frames", type=int, help="frames per clip (shipped: 25; wan_afb: 83, its first passes one fewer; "
                                              "wan_flf: 81)")
    w.add_argument("--steps", type=int, help="sampling steps (default: the workflow's; with --mode, the mode's own)")
    w.add_argument("--seed", type=int, help=seed_help or "sampler seed, the same for every pair (shipped: 42)")
    w.add_argument("--cfg", type=float, help="guidance scale (default: the workflow's; with --mode, the mode's own)")
    w.add_argument("--recurrence", type=int, help="re-noising passes (shipped: 5)")
    w.add_argument("--recurrence-ratio", type=float, help="share of the steps with recurrence (shipped: 0.5)")
    w.add_argument("--forward-weight", type=float, help="fusion weight of the forward direction (shipped: 0.5)")
    w.add_argument("--execution", choices=EXECUTIONS, help="auto, batched, sequential or lowvram (shipped: auto)")
    w.add_argument("--motion-bucket-id", type=int, help="SVD motion bucket (shipped: 127)")
    w.add_argument("--fps", type=int, help="frame-rate id and video fps (shipped: 7); a video whose frames FrameInterpolate multiplied plays at that many times this rate (svd_inbetween_film: 2x)")
    w.add_argument("--resize", choices=RESIZE_MODES, help=resize_help or "how keyframes fit the size (shipped: crop)")


def add_server_args(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("servers")
    s.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a running ComfyUI server, e.g. http://127.0.0.1:8188 (repeatable)")
    s.add_argument("--servers", metavar="FILE",
                   help="file with one server URL per line, each optionally followed by its own --ca-cert, "
                        "--insecure, --header, --header-file, --header-env")
    s.add_argument("--per-server", type=int, default=1, metavar="K", help="prompts in flight per server (default 1)")
    s.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds a prompt may run (from its start on the server) before it is interrupted and "
                        "re-queued elsewhere; 0: no limit (default 3600)")
    s.add_argument("--retries", type=int, default=2, help="re-queues per pair after server faults (default 2)")
    s.add_argument("--server-wait", type=float, default=300.0,
                   help="seconds to wait for a server to come back when none is reachable (default 300)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_transport_args(p)
    loc = p.add_argument_group("private server (used when no --server is given)")
    loc.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH or ~/ComfyUI)")
    loc.add_argument("--cpu", action="store_true", help="run the private server on the CPU")
    loc.add_argument("--cuda-device", help="GPU of the private server (ComfyUI's --cuda-device)")
    loc.add_argument("--custom-nodes", action="append", default=[], metavar="DIR",
                     help="another custom node folder for the private server (repeatable)")


def fail(message: str) -> SystemExit:
    return SystemExit(f"svd-inbetween: {message}")


# ---------------------------------------------------------------------- pairs

def collect_pairs(args) -> list[Pair]:
    given = [bool(args.start or args.end), bool(args.pairs), bool(args.folder), bool(getattr(args, "keyframes", None))]
    if sum(given) != 1:
        raise SystemExit("svd-inbetween run: give --start and --end, or --pairs FILE, or --folder DIR, "
                         "or --keyframes A B ...")
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
    elif args.folder:
        images = sorted(f for f in os.listdir(args.folder) if f.lower().endswith(IMAGE_EXTS))
        if len(images) < 2:
            raise SystemExit(f"svd-inbetween run: {args.folder} holds fewer than two images")
        pairs = [Pair(os.path.join(args.folder, a), os.path.join(args.folder, b),
                      os.path.join(args.output, f"{i:04d}_{os.path.splitext(a)[0]}.mp4"))
                 for i, (a, b) in enumerate(zip(images, images[1:]))]
    else:
        if len(args.keyframes) < 2:
            raise SystemExit("svd-inbetween run: --keyframes needs at least two images")
        folder = segments_folder(args.output)
        pairs = [Pair(a, b, os.path.join(folder, f"{i:04d}_{_stem(a)}_{_stem(b)}.mp4"))
                 for i, (a, b) in enumerate(zip(args.keyframes, args.keyframes[1:]))]
    for pair in pairs:
        for path in (pair.start, pair.end):
            if not os.path.isfile(path):
                raise SystemExit(f"svd-inbetween run: keyframe not found: {path}")
    keys = [os.path.abspath(p.output) for p in pairs]
    if len(set(keys)) != len(keys):
        raise SystemExit("svd-inbetween run: two pairs write the same output file")
    return pairs


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def segments_folder(output: str) -> str:
    return os.path.splitext(output)[0] + "_segments"


def keyframe_problem(path: str) -> str | None:
    """Why Pillow cannot read a keyframe (the pair then fails alone, before anything is queued)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # Pillow raises many types for broken files
        return f"keyframe {path} is not an image Pillow can read ({type(e).__name__}: {e})"
    return None


# ---------------------------------------------------------------------- the prompt

def model_value(value: str | None, folder: str, model_dirs: dict[str, str]) -> str | None:
    """A local file becomes its name (its folder goes to a private server); anything else is a server-side name."""
    if value and os.path.isfile(value):
        model_dirs[folder] = os.path.dirname(os.path.abspath(value))
        return os.path.basename(value)
    return value


def build_prompt(args) -> tuple[dict, tuple[str, str], dict[str, str]]:
    """The workflow with every flag applied, its keyframe node ids, and model folders for a private server."""
    from .workflow import (apply_flags, apply_mode_settings, apply_models, apply_sets, drop_backward_weights,
                           keyframe_nodes, load_workflow, mode_of)
    path = resolve_workflow(args.workflow)
    prompt = load_workflow(path)
    nodes = keyframe_nodes(prompt, args.start_node, args.end_node)
    model_dirs: dict[str, str] = {}
    models = {flag: model_value(getattr(args, flag, None), folder, model_dirs) for flag, folder in MODEL_FOLDERS.items()}
    apply_models(prompt, models)
    apply_flags(prompt, {k: getattr(args, k, None) for k in GENERATION_FLAGS})
    if getattr(args, "mode", None) and is_shipped(path):  # a shipped template's steps and cfg are its mode's
        apply_mode_settings(prompt, args.mode, {k: getattr(args, k, None) is not None for k in ("steps", "cfg")})
    if not args.workflow and not args.backward and mode_of(prompt) not in BACKWARD_WEIGHT_MODES:
        drop_backward_weights(prompt)  # the shipped workflow without weights the mode does not use
    apply_sets(prompt, args.set)
    return prompt, nodes, model_dirs


def resolve_workflow(workflow: str | None) -> str:
    """The file `--workflow` names: the default; a shipped workflow's name (`svd_inbetween_vibid`, with or without
    .json); a renamed one's old name or old workflows/api path (templates.RENAMED), as the new file; else the path.
    A file of the user's own that exists is theirs whatever its name."""
    if not workflow:
        return WORKFLOW
    if os.path.exists(workflow):
        return workflow
    folder, stem = os.path.split(workflow[:-len(".json")] if workflow.endswith(".json") else workflow)
    if folder and os.path.abspath(folder) != SHIPPED:
        return workflow
    stem = RENAMED.get(stem, stem)
    shipped = os.path.join(SHIPPED, stem + ".json")
    return shipped if os.path.exists(shipped) else workflow


def is_shipped(workflow: str | None) -> bool:
    """The default workflow or another of the pack's workflows/api: its settings are its template's, not the user's."""
    return workflow is None or os.path.dirname(os.path.abspath(resolve_workflow(workflow))) == SHIPPED


def server_addresses(args) -> list[ServerAddress]:
    """The address of every --server and --servers line (credentials kept out of their names): built here, once;
    the client takes them as they are."""
    from ..client.transport import TransportError, options_from_args, read_servers_file, server_address
    options = options_from_args(args)
    try:
        servers = [server_address(u, options) for u in args.server]
        if args.servers:
            servers += read_servers_file(args.servers, options)
        if not servers and (options.headers or options.header_files or options.header_envs or options.ca_cert
                            or options.insecure):
            log.warning("--ca-cert, --insecure and --header* apply to --server/--servers only; the private "
                        "server ignores them")
    except TransportError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"--servers {args.servers}: {e.strerror}") from None
    return servers


def build_jobs(pairs: list[Pair], prompt: dict, nodes: tuple[str, str], manifest) -> list:
    from ..client.api_client import UPLOAD_SUBFOLDER
    from ..client.job import Job
    from .workflow import fingerprint, seed_of, upload_name, with_keyframes
    jobs = []
    for pair in pairs:
        key = manifest.key(pair.output)
        meta = {"start": os.path.abspath(pair.start), "end": os.path.abspath(pair.end)}
        problem = keyframe_problem(pair.start) or keyframe_problem(pair.end)
        if problem:
            jobs.append(Job(key, pair.output, None, meta=meta, error=problem))
            continue
        names = tuple(f"{UPLOAD_SUBFOLDER}/{upload_name(p)}" for p in (pair.start, pair.end))
        p = with_keyframes(prompt, nodes, names)
        jobs.append(Job(key, pair.output, p, uploads={names[0]: pair.start, names[1]: pair.end},
                        fingerprint=fingerprint(p), seed=seed_of(p), meta=meta))
    return jobs


def dispatch(args, jobs: list, manifest, model_dirs: dict[str, str], skip_nodes: tuple[str, ...]):
    """Run the jobs on --server/--servers, or on a private server started for this call."""
    import contextlib

    from ..client.dispatch import Dispatcher, NoServer, Settings
    from ..client.local_server import LocalServer
    from ..client.transport import TransportOptions, server_address
    settings = Settings(per_server=max(1, args.per_server), retries=max(0, args.retries),
                        timeout=args.timeout or None, server_wait=args.server_wait,
                        progress=not args.no_progress, max_download_mb=args.max_download_mb)
    addresses = server_addresses(args)
    dispatcher = Dispatcher(addresses, manifest, settings, skip_nodes)
    todo = dispatcher.triage(jobs)
    with contextlib.ExitStack() as stack:
        if todo and not addresses:
            url = stack.enter_context(LocalServer(args.comfyui, args.cpu, args.cuda_device, tuple(args.custom_nodes),
                                                  model_dirs))
            dispatcher.add_server(server_address(url, TransportOptions()))
        try:
            dispatcher.run(todo)
        except NoServer as e:
            raise fail(str(e)) from None
    return dispatcher


def exit_code(jobs: list, interrupted: bool = False) -> int:
    if interrupted or any(j.status == "interrupted" for j in jobs):
        return 130
    return 1 if any(j.status in ("failed", "pending") for j in jobs) else 0


def join_segments(paths: list[str], dest: str) -> None:
    """One video from consecutive segments; each shared keyframe frame appears once."""
    from fractions import Fraction

    import av

    from ..client.manifest import replace_atomically, temporary_path
    tmp = temporary_path(dest)
    with av.open(paths[0]) as first:
        src = first.streams.video[0]
        rate, width, height = src.average_rate or 7, src.codec_context.width, src.codec_context.height
    with av.open(tmp, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        count = 0
        for i, path in enumerate(paths):
            with av.open(path) as c:
                for j, frame in enumerate(c.decode(video=0)):
                    if i and not j:
                        continue
                    frame = frame.reformat(width, height, "yuv420p")
                    frame.pts, frame.time_base = count, Fraction(1, 1) / rate  # one clock for all segments
                    count += 1
                    for packet in stream.encode(frame):
                        out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    replace_atomically(tmp, dest)


def main(args: argparse.Namespace) -> int:
    from ..client.dispatch import summary
    from ..client.manifest import Manifest
    from .workflow import WorkflowError
    pairs = collect_pairs(args)
    try:
        prompt, nodes, model_dirs = build_prompt(args)
    except WorkflowError as e:
        raise fail(str(e)) from None
    if args.keyframes:
        folder = segments_folder(args.output)
    elif args.start:
        folder = os.path.dirname(os.path.abspath(args.output))
    else:
        folder = args.output
    manifest = Manifest(folder)
    jobs = build_jobs(pairs, prompt, nodes, manifest)
    try:
        dispatcher = dispatch(args, jobs, manifest, model_dirs, skip_nodes=nodes)
    except KeyboardInterrupt:  # before the batch started (admission, private server start)
        log.warning("interrupted before anything was queued")
        return 130
    print(summary(dispatcher, jobs))
    code = exit_code(jobs, dispatcher.stopping)
    if args.keyframes and code == 0:
        join_segments([p.output for p in pairs], args.output)
        print(f"joined {len(pairs)} segments into {args.output}")
    return code
