"""Writing a finished prompt's outputs into the output folder. The server's answer decides which of the
prompt's nodes saved files and their extensions, nothing else: names come from the job, and every path
is checked to resolve inside the job's folder."""
from __future__ import annotations

import collections
import os
import re

from .answers import BadAnswer, NodeFailed, output_files
from .api_client import ComfyClient
from .job import Job
from .manifest import replace_atomically, temporary_path
from .transport import inside

SAFE_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SAFE_EXT = re.compile(r"\.[A-Za-z0-9]{1,10}")


async def save_outputs(client: ComfyClient, job: Job, entry: dict) -> list[str]:
    """Download the outputs of the prompt's own nodes. Every name is built from the job's output name, the
    node id of our prompt and an extension checked to be plain; nothing is renamed into place until every
    file has arrived, so a refused or broken download leaves no file."""
    items = output_files(entry, set(job.prompt), client.url)
    if not items:
        raise NodeFailed("the prompt ran but saved no file (the workflow needs a SaveVideo, SaveImage, ... node)")
    ext = os.path.splitext(job.output)[1].lower()
    primary = next((i for i, (_, it) in enumerate(items) if _extension(it["filename"]) == ext), None)
    stem = os.path.splitext(os.path.basename(job.output))[0]
    folder = job.extras_dir or os.path.dirname(os.path.abspath(job.output))
    plan, counts = [], collections.Counter()
    for i, (node, item) in enumerate(items):
        if i == primary:
            dest = job.output
        else:
            counts[node] += 1
            label = node if SAFE_NODE.fullmatch(node) else f"node{i}"
            dest = os.path.join(folder, f"{stem}_{label}_{counts[node]:05d}{_extension(item['filename'])}")
            if not inside(folder, dest):  # e.g. a symlink planted where the file would go
                raise BadAnswer(f"output {os.path.basename(dest)} would resolve outside {folder}; refused")
        plan.append((item, dest, temporary_path(dest)))
    try:
        for item, _, tmp in plan:
            await client.download(item, tmp)
        for _, dest, tmp in plan:
            replace_atomically(tmp, dest)
    finally:
        for _, _, tmp in plan:
            if os.path.exists(tmp):
                os.remove(tmp)
    return [dest for _, dest, _ in plan]


def _extension(filename: str) -> str:
    """The server's file name is only asked for its extension, and only a plain one is kept."""
    ext = os.path.splitext(filename)[1].lower()
    return ext if SAFE_EXT.fullmatch(ext) else ".bin"
