"""One clip of a batch: the prompt to run, where its files go, and what became of it (dispatch runs it,
outputs names its files from it, the manifest records it)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Job:
    key: str                      # manifest key (output path relative to the manifest folder)
    output: str                   # the primary output file
    prompt: dict | None           # None for a pair that failed before dispatch (see error)
    uploads: dict[str, str] = field(default_factory=dict)  # LoadImage value -> local file
    fingerprint: str = ""
    seed: int | None = None
    meta: dict = field(default_factory=dict)  # recorded as is (start, end, ...)
    extras_dir: str | None = None  # where outputs other than the primary go (default: beside it)
    error: str | None = None
    status: str = "pending"       # pending, done, skipped, failed, interrupted
    attempts: int = 0
    server: str | None = None
    prompt_id: str | None = None
    seconds: float = 0.0
    server_seconds: float | None = None
    phases: dict = field(default_factory=dict)  # seconds in upload, post, wait, download (last attempt)
    files: list[str] = field(default_factory=list)
    avoid: set = field(default_factory=set)
