"""What a server answered, read as untrusted input: the client's exceptions, ComfyUI's error bodies as
one line, and the files a /history entry names (only those of the submitted prompt's nodes, only safe
names). Shapes as ComfyUI 0.3.64, 0.8 and 0.33 send them."""
from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


class ServerLost(ConnectionError):
    """The server cannot be reached, dropped the websocket for good, or lost the prompt."""


class BadAnswer(ServerLost):
    """The server answered something this client cannot trust (not JSON, a wrong shape, an unsafe file name,
    a file over the size cap): the clip fails there and may go to another server."""


class AccessDenied(PermissionError):
    """HTTP 401/403 or an untrusted TLS certificate: the server cannot be used with these credentials or
    certificates; it is reported once and not retried."""


class PromptRejected(ValueError):
    """POST /prompt answered 400: the prompt failed validation (not worth retrying)."""


class NodeFailed(RuntimeError):
    """A node raised while the prompt ran (execution_error; not worth retrying)."""


class PromptInterrupted(RuntimeError):
    """The prompt ended as interrupted (someone, maybe us, called /interrupt)."""


def format_rejection(body: Any) -> str:
    """ComfyUI's /prompt error body ({"error": {...} or str, "node_errors": {...}}) as one line."""
    if not isinstance(body, dict):
        return str(body)
    err = body.get("error")
    parts = []
    if isinstance(err, dict):
        text = err.get("message") or err.get("type") or ""
        if err.get("details") and err.get("details") != text:
            text += f": {err['details']}"
        parts.append(text)
    elif err:
        parts.append(str(err))
    for node_id, info in (body.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            detail = e.get("details") or ""
            parts.append(f"node {node_id} ({info.get('class_type', '?')}): {e.get('message', '')}"
                         + (f": {detail}" if detail else ""))
    return "; ".join(p for p in parts if p) or json.dumps(body)[:500]


def format_node_error(data: dict) -> str:
    """An execution_error message as ComfyUI reported it."""
    return (f"node {data.get('node_id', '?')} ({data.get('node_type', '?')}) raised "
            f"{data.get('exception_type', 'an exception')}: {str(data.get('exception_message', '')).strip()}")


def output_files(entry: dict, node_ids: set[str] | None = None, source: str = "the server") -> list[tuple[str, dict]]:
    """(node id, {"filename", "subfolder", "type"}) of every saved file in a history entry's outputs,
    whatever the UI key (images, gifs, videos, latents, audio ...); temp previews are left out. With
    `node_ids` (the submitted prompt's), outputs of any other node are left out: the server does not
    get to add files to a job."""
    files = []
    outputs = entry.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise BadAnswer(f"the history entry's 'outputs' is a {type(outputs).__name__}, not an object")
    foreign = [n for n in outputs if node_ids is not None and n not in node_ids]
    if foreign:
        log.warning("%s: the history names outputs of %d node(s) the prompt does not have; ignored",
                    source, len(foreign))
    for node_id, out in outputs.items():
        if node_id in foreign or not isinstance(out, dict):
            continue
        for value in out.values():
            for item in value if isinstance(value, list) else []:
                if isinstance(item, dict) and item.get("filename") and item.get("type", "output") == "output":
                    check_item(node_id, item)
                    files.append((node_id, item))
    return files


def check_item(node_id: str, item: dict) -> None:
    """Refuse an output whose names could mean anything but a file in the server's output folder."""
    for key in ("filename", "subfolder"):
        value = item.get(key, "")
        if not isinstance(value, str) or "\0" in value or value.startswith(("/", "\\")) or \
                ".." in value.replace("\\", "/").split("/") or (key == "filename" and ("/" in value or "\\" in value)):
            raise BadAnswer(f"the history names an output of node {node_id} with an unsafe {key} "
                            f"{str(value)[:80]!r} (absolute, '..' or a path separator); refused")


def history_error(entry: dict) -> tuple[str, dict] | None:
    """('execution_error' | 'execution_interrupted', data) for a history entry that did not succeed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return None
    if not isinstance(status.get("messages") or [], list):
        raise BadAnswer("the history entry's status.messages is not a list")
    for message in reversed(status.get("messages") or []):
        event, data = (message if isinstance(message, list) and len(message) == 2 else (None, None))
        if event in ("execution_error", "execution_interrupted"):
            return event, data
    return "execution_error", {"exception_message": "the prompt ended with status "
                               f"{status.get('status_str')!r} and no error message"}


def execution_seconds(entry: dict) -> float | None:
    """Seconds from execution_start to the terminal message, by the server's own timestamps."""
    stamps = {m[0]: m[1].get("timestamp") for m in (entry.get("status") or {}).get("messages") or []
              if isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], dict)}
    start = stamps.get("execution_start")
    end = next((stamps[e] for e in TERMINAL if stamps.get(e)), None)
    if not all(isinstance(t, (int, float)) for t in (start, end)):
        return None
    return (end - start) / 1000 if start and end else None
