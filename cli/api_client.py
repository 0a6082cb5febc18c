"""One ComfyUI server through its public API: POST /prompt, /ws, /history, /view, /upload/image,
/interrupt, /queue, /object_info, /system_stats.

Built on aiohttp (ComfyUI's own dependency). Message shapes checked against ComfyUI 0.3.64, 0.8
and 0.33: a prompt ends with `execution_success`, `execution_error` or `execution_interrupted`,
then the server writes its history entry, then sends `executing` with `node: null`;
/history/{id} is `{id: {"prompt", "outputs", "status"}}` on all three.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

log = logging.getLogger(__name__)
UPLOAD_SUBFOLDER = "svd_inbetween"
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


class ServerLost(ConnectionError):
    """The server cannot be reached, dropped the websocket for good, or lost the prompt."""


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


@dataclass
class Watch:
    """What the websocket said about one prompt."""
    prompt_id: str
    done: asyncio.Future
    posted: float = 0.0           # time.monotonic() when POST /prompt returned
    started: float | None = None  # time.monotonic() of execution_start
    step: tuple[int, int] | None = None
    events: list[str] = field(default_factory=list)


def output_files(entry: dict) -> list[tuple[str, dict]]:
    """(node id, {"filename", "subfolder", "type"}) of every saved file in a history entry's outputs,
    whatever the UI key (images, gifs, videos, latents, audio ...); temp previews are left out."""
    files = []
    for node_id, out in (entry.get("outputs") or {}).items():
        for value in out.values():
            for item in value if isinstance(value, list) else []:
                if isinstance(item, dict) and item.get("filename") and item.get("type", "output") == "output":
                    files.append((node_id, item))
    return files


def history_error(entry: dict) -> tuple[str, dict] | None:
    """('execution_error' | 'execution_interrupted', data) for a history entry that did not succeed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return None
    for event, data in reversed(status.get("messages") or []):
        if event in ("execution_error", "execution_interrupted"):
            return event, data
    return "execution_error", {"exception_message": "the prompt ended with status "
                               f"{status.get('status_str')!r} and no error message"}


def execution_seconds(entry: dict) -> float | None:
    """Seconds from execution_start to the terminal message, by the server's own timestamps."""
    stamps = {ev: d.get("timestamp") for ev, d in (entry.get("status") or {}).get("messages") or []
              if isinstance(d, dict)}
    start = stamps.get("execution_start")
    end = next((stamps[e] for e in TERMINAL if stamps.get(e)), None)
    return (end - start) / 1000 if start and end else None


class ComfyClient:
    """HTTP calls and one websocket (its own client_id) to one server. Use inside a running event loop."""

    def __init__(self, url: str, request_timeout: float = 60, on_event: Callable[[str, dict], None] | None = None):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self.request_timeout = request_timeout
        self.on_event = on_event
        self.session: aiohttp.ClientSession | None = None
        self.watches: dict[str, Watch] = {}
        self.queue_remaining = 0
        self._ws_task: asyncio.Task | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connections = 0  # websocket connections made (reconnects included)
        self.ws_connected = asyncio.Event()
        self.ws_lost = asyncio.Event()

    async def open(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close(self) -> None:
        await self.stop_listening()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # ------------------------------------------------------------------ HTTP
    async def _request(self, method: str, path: str, **kw) -> aiohttp.ClientResponse:
        await self.open()
        try:
            return await self.session.request(method, self.url + path,
                                              timeout=aiohttp.ClientTimeout(total=self.request_timeout), **kw)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ServerLost(f"{self.url}: {method} {path} failed: {type(e).__name__}: {e}") from e

    async def get_json(self, path: str) -> Any:
        async with await self._request("GET", path) as r:
            if r.status != 200:
                raise ServerLost(f"{self.url}: GET {path} answered HTTP {r.status}")
            try:
                return await r.json(content_type=None)
            except (aiohttp.ClientError, ValueError, asyncio.TimeoutError) as e:
                raise ServerLost(f"{self.url}: GET {path}: {e}") from e

    async def system_stats(self) -> dict:
        return await self.get_json("/system_stats")

    async def object_info(self) -> dict:
        return await self.get_json("/object_info")

    async def queue_length(self) -> int:
        info = await self.get_json("/prompt")
        return int(info.get("exec_info", {}).get("queue_remaining", 0))

    async def queue_ids(self) -> tuple[set[str], set[str]]:
        """Prompt ids (running, pending) on the server."""
        q = await self.get_json("/queue")
        return tuple({item[1] for item in q.get(key, []) if isinstance(item, list) and len(item) > 1}
                     for key in ("queue_running", "queue_pending"))

    async def history(self, prompt_id: str) -> dict | None:
        """The finished history entry of a prompt, or None while it is queued or running."""
        entry = (await self.get_json(f"/history/{prompt_id}")).get(prompt_id)
        if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
            return entry
        return None

    async def upload_image(self, local_path: str, name: str) -> str:
        """Upload into input/<UPLOAD_SUBFOLDER>/name (overwriting); the value for a LoadImage input."""
        form = aiohttp.FormData()
        with open(local_path, "rb") as f:
            form.add_field("image", f.read(), filename=name, content_type="application/octet-stream")
        form.add_field("type", "input")
        form.add_field("subfolder", UPLOAD_SUBFOLDER)
        form.add_field("overwrite", "true")
        async with await self._request("POST", "/upload/image", data=form) as r:
            if r.status != 200:
                raise ServerLost(f"{self.url}: /upload/image answered HTTP {r.status}: {(await r.text())[:300]}")
            body = await r.json(content_type=None)
        return f"{body.get('subfolder') or UPLOAD_SUBFOLDER}/{body['name']}"

    async def queue_prompt(self, prompt: dict, prompt_id: str) -> None:
        """POST /prompt under our client_id and a prompt_id we chose (a canonical UUID, as 0.33 requires)."""
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        async with await self._request("POST", "/prompt", json=payload) as r:
            text = await r.text()
            if r.status == 200:
                return
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            if r.status == 400:
                raise PromptRejected(format_rejection(body))
            raise ServerLost(f"{self.url}: /prompt answered HTTP {r.status}: {str(body)[:300]}")

    async def download(self, item: dict, dest: str) -> int:
        """Stream an output file from /view into `dest` (a temporary path; the caller renames it)."""
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        size = 0
        async with await self._request("GET", "/view", params=params) as r:
            if r.status != 200:
                raise ServerLost(f"{self.url}: /view {params} answered HTTP {r.status}")
            with open(dest, "wb") as f:
                async for chunk in r.content.iter_chunked(1 << 20):
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        return size

    async def cancel(self, prompt_id: str, confirm: float = 5.0) -> bool:
        """Drop the prompt from the queue while it waits, interrupt it while it runs, until the server no
        longer holds it (an interrupt that lands between dequeue and start is lost, so it is repeated).
        True when the server confirmed; False when it stayed or the server did not answer."""
        deadline = time.monotonic() + confirm
        try:
            while True:
                running, pending = await self.queue_ids()
                if prompt_id in pending:
                    await self._post("/queue", {"delete": [prompt_id]})
                elif prompt_id in running:
                    await self._post("/interrupt", {"prompt_id": prompt_id})  # targeted (0.3.6x+)
                else:
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.25)
        except ServerLost as e:
            log.debug("cancel %s: %s", prompt_id, e)
            return False

    async def _post(self, path: str, body: dict) -> None:
        async with await self._request("POST", path, json=body):
            pass

    # ------------------------------------------------------------------ websocket
    def watch(self, prompt_id: str) -> Watch:
        w = Watch(prompt_id, asyncio.get_running_loop().create_future())
        self.watches[prompt_id] = w
        return w

    def unwatch(self, prompt_id: str) -> None:
        self.watches.pop(prompt_id, None)

    async def listen(self) -> None:
        """Connect /ws (raises ServerLost if it cannot) and keep reading in a background task;
        when the socket closes, `ws_lost` is set."""
        await self.open()
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + f"/ws?clientId={self.client_id}"
        try:
            ws = await self.session.ws_connect(ws_url, heartbeat=10, timeout=aiohttp.ClientWSTimeout(ws_close=5)
                                               if hasattr(aiohttp, "ClientWSTimeout") else 5)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ServerLost(f"{self.url}: websocket: {type(e).__name__}: {e}") from e
        self.ws_lost.clear()
        self.ws_connected.set()
        self.connections += 1
        self.ws = ws
        self._ws_task = asyncio.create_task(self._read(ws))

    async def stop_listening(self) -> None:
        if self._ws_task is not None:
            self._ws_task.cancel()
            try:
                await self._ws_task
            except (asyncio.CancelledError, Exception):
                pass
            self._ws_task = None

    async def _read(self, ws) -> None:
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    self._dispatch(data.get("type", ""), data.get("data") or {})
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
                # binary messages are previews: not needed
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            log.debug("%s: websocket error %s", self.url, e)
        finally:
            await ws.close()
            self.ws_connected.clear()
            self.ws_lost.set()

    def _dispatch(self, kind: str, data: dict) -> None:
        if kind == "status":
            self.queue_remaining = int(((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining", 0))
        w = self.watches.get(data.get("prompt_id")) if isinstance(data, dict) else None
        if w is not None:
            w.events.append(kind)
            if kind == "execution_start":
                w.started = time.monotonic()
            elif kind == "progress" and "value" in data and "max" in data:
                w.step = (int(data["value"]), int(data["max"]))
            # the history entry is written after execution_* and before `executing` with node None
            if kind == "executing" and data.get("node") is None and not w.done.done():
                w.done.set_result(kind)
        if self.on_event is not None:
            self.on_event(kind, data)
