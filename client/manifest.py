"""The batch manifest: one JSON object per line beside the outputs, appended and fsynced per event.

Each line records a pair (its output path relative to the manifest's folder), the server, the
prompt_id, the seed, the status (running, done, failed, requeued, interrupted), seconds and
error. The last line of a pair wins. A pair is done when its last line says so, its
fingerprint (the prompt it was made from) is the same, and every file it wrote still exists;
re-running the same command skips those. A torn last line (power cut) is ignored.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

log = logging.getLogger(__name__)
MANIFEST_NAME = "svd_inbetween_manifest.jsonl"


def temporary_path(dest: str) -> str:
    """A hidden name in the destination's folder (same filesystem, so os.replace is atomic)."""
    folder, name = os.path.split(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f".{name}.part-{uuid.uuid4().hex[:8]}")


def replace_atomically(tmp: str, dest: str) -> None:
    os.replace(tmp, dest)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(dest)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Manifest:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.path = os.path.join(self.folder, MANIFEST_NAME)
        self.last: dict[str, dict] = {}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        log.warning("manifest %s line %d is incomplete; ignored", self.path, number)
                        continue
                    if isinstance(rec, dict) and "pair" in rec:
                        self.last[rec["pair"]] = rec

    def key(self, output: str) -> str:
        return os.path.relpath(os.path.abspath(output), self.folder)

    def done(self, key: str, fingerprint: str) -> dict | None:
        """The pair's done record when it can be skipped."""
        rec = self.last.get(key)
        if not rec or rec.get("status") != "done" or rec.get("fingerprint") != fingerprint:
            return None
        files = rec.get("files") or []
        if not files or not all(os.path.isfile(os.path.join(self.folder, f)) for f in files):
            return None
        return rec

    def write(self, key: str, status: str, **fields: Any) -> dict:
        rec = {"pair": key, "status": status, **fields, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        line = json.dumps(rec, sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.last[key] = rec
        return rec
