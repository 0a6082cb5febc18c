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
from urllib.parse import urlsplit

import aiohttp

from .answers import (TERMINAL, AccessDenied, BadAnswer, NodeFailed, PromptInterrupted,  # noqa: F401 (re-exported)
                      PromptRejected, ServerLost, execution_seconds, format_node_error, format_rejection,
                      history_error, output_files)
from .transport import DEFAULT_MAX_DOWNLOAD_MB, ServerAddress

log = logging.getLogger(__name__)
UPLOAD_SUBFOLDER = "svd_inbetween"


@dataclass
class Watch:
    """What the websocket said about one prompt."""
    prompt_id: str
    done: asyncio.Future
    posted: float = 0.0           # time.monotonic() when POST /prompt returned
    started: float | None = None  # time.monotonic() of execution_start
    step: tuple[int, int] | None = None
    events: list[str] = field(default_factory=list)


class ComfyClient:
    """HTTP calls and one websocket (its own client_id) to one server. Use inside a running event loop."""

    def __init__(self, address: ServerAddress, request_timeout: float = 60,
                 on_event: Callable[[str, dict], None] | None = None,
                 max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB):
        self.address = address
        self.url = self.address.url  # never holds credentials: they go in `auth` and headers
        self.max_download = int(max_download_mb * 2**20)
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
        self.malformed_messages = 0

    async def open(self) -> None:
        if self.session is None:
            a = self.address
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                connector=aiohttp.TCPConnector(ssl=a.ssl), headers=a.headers,
                auth=aiohttp.BasicAuth(*a.auth) if a.auth else None)

    async def close(self) -> None:
        await self.stop_listening()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # ------------------------------------------------------------------ HTTP
    def redact(self, text: str) -> str:
        return self.address.redact(text)

    def _denied(self, what: str, status: int) -> AccessDenied:
        creds = "the user:password in the URL" if self.address.auth else "no user:password in the URL"
        heads = f"headers {', '.join(self.address.headers)}" if self.address.headers else "no --header"
        return AccessDenied(f"{self.url}: {what} answered HTTP {status}: the server (or its proxy) refused the "
                            f"credentials ({creds}, {heads}); fix them, this server is not retried")

    async def _request(self, method: str, path: str, **kw) -> aiohttp.ClientResponse:
        await self.open()
        try:
            r = await self.session.request(method, self.url + path, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=self.request_timeout), **kw)
        except aiohttp.ClientConnectorCertificateError as e:
            raise self._untrusted(e) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ServerLost(self.redact(f"{self.url}: {method} {path} failed: {type(e).__name__}: {e}")) from None
        if r.status in (401, 403):
            r.release()
            raise self._denied(f"{method} {path}", r.status)
        if 300 <= r.status < 400:
            r.release()
            where = urlsplit(r.headers.get("Location", ""))
            target = f"{where.scheme}://{where.hostname}:{where.port}" if where.hostname else "?"
            # not followed: credentials go only to the server the user named
            raise AccessDenied(self.redact(f"{self.url}: {method} {path} answered a redirect (HTTP {r.status}) to "
                                           f"{target}; give the URL it redirects to as the server"))
        return r

    def _untrusted(self, e: Exception) -> AccessDenied:
        how = f"the CA in --ca-cert {self.address.ca_cert}" if self.address.ca_cert else "the system trust store"
        return AccessDenied(self.redact(
            f"{self.url}: TLS certificate not trusted by {how} ({getattr(e, 'certificate_error', e)}); pass "
            "--ca-cert FILE with the PEM of the CA (or self-signed certificate) the server uses"))

    async def get_json(self, path: str, kind: type = dict) -> Any:
        async with await self._request("GET", path) as r:
            if r.status != 200:
                raise ServerLost(f"{self.url}: GET {path} answered HTTP {r.status}")
            try:
                body = await r.json(content_type=None)
            except ValueError as e:
                raise BadAnswer(f"{self.url}: GET {path} answered invalid JSON ({type(e).__name__})") from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                raise ServerLost(self.redact(f"{self.url}: GET {path}: {type(e).__name__}: {e}")) from None
        if not isinstance(body, kind):
            raise BadAnswer(f"{self.url}: GET {path} answered a JSON {type(body).__name__}, "
                            f"not the {kind.__name__} ComfyUI sends")
        return body

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
        if entry is not None and (not isinstance(entry, dict) or not isinstance(entry.get("status") or {}, dict)):
            raise BadAnswer(f"{self.url}: /history/{prompt_id} is not a history entry (an object with a 'status' "
                            "object)")
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
                raise ServerLost(self.redact(f"{self.url}: /upload/image answered HTTP {r.status}: "
                                             f"{(await r.text())[:300]}"))
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise BadAnswer(f"{self.url}: /upload/image did not answer an object with the stored 'name'")
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
                try:
                    raise PromptRejected(self.redact(format_rejection(body)))
                except (AttributeError, TypeError):  # not the shape ComfyUI sends
                    raise PromptRejected(self.redact(str(body)[:500])) from None
            raise ServerLost(self.redact(f"{self.url}: /prompt answered HTTP {r.status}: {str(body)[:300]}"))

    async def download(self, item: dict, dest: str) -> int:
        """Stream an output file from /view into `dest` (a temporary path; the caller renames it or removes it),
        at most `max_download` bytes."""
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        size = 0
        cap = self.max_download
        too_big = BadAnswer(f"{self.url}: output {item['filename'][:80]!r} is larger than --max-download-mb "
                            f"{cap / 2**20:g} MiB; refused (raise --max-download-mb if such files are expected)")
        async with await self._request("GET", "/view", params=params) as r:
            if r.status != 200:
                raise ServerLost(f"{self.url}: /view {params} answered HTTP {r.status}")
            if (r.content_length or 0) > cap:
                raise too_big
            with open(dest, "wb") as f:
                async for chunk in r.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > cap:
                        raise too_big
                    f.write(chunk)
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
        except aiohttp.WSServerHandshakeError as e:
            if e.status in (401, 403):
                raise self._denied("the websocket /ws", e.status) from None
            raise ServerLost(self.redact(f"{self.url}: websocket: HTTP {e.status}: {e.message}")) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise self._untrusted(e) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ServerLost(self.redact(f"{self.url}: websocket: {type(e).__name__}: {e}")) from None
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
                        data = None
                    # the websocket only hastens the end of a wait; /history decides, so a bad message is dropped
                    if not isinstance(data, dict) or not isinstance(data.get("type", ""), str) \
                            or not isinstance(data.get("data") or {}, dict):
                        self._malformed()
                        continue
                    try:
                        self._dispatch(data.get("type", ""), data.get("data") or {})
                    except (TypeError, ValueError, AttributeError):
                        self._malformed()
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
                # binary messages are previews: not needed
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            log.debug("%s: websocket error %s", self.url, e)
        finally:
            await ws.close()
            self.ws_connected.clear()
            self.ws_lost.set()

    def _malformed(self) -> None:
        self.malformed_messages += 1
        if self.malformed_messages == 1:
            log.warning("%s: the websocket sent a message that is not ComfyUI's; ignored (the history decides)",
                        self.url)

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
