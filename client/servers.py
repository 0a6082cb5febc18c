"""The servers of a batch: admission (reachable, pack and models present), websocket watch,
death, probing and re-admission. A server is `alive`, `dead` (unreachable; probed until it comes
back) or `excluded` (it answers but cannot run the workflow: missing nodes or models, refused
credentials or an untrusted certificate, answers that are not ComfyUI's; never retried)."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .api_client import AccessDenied, BadAnswer, ComfyClient, ServerLost, Watch
from .object_info import check_against_server
from .transport import DEFAULT_MAX_DOWNLOAD_MB, ServerAddress

log = logging.getLogger(__name__)
PROBE_MIN, PROBE_MAX = 1.0, 5.0
RECONNECT_TRIES = 3


class ServerSlot:
    def __init__(self, address: ServerAddress, per_server: int,
                 on_event: Callable[[str, dict], None] | None = None,
                 max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB):
        self.url = address.url
        self.name = address.name  # scheme://host:port: what tables, logs and the manifest show
        self.per_server = per_server
        self.client = ComfyClient(address, on_event=lambda kind, data: self._event(kind, data, on_event),
                                  max_download_mb=max_download_mb)
        self.state = "unused"
        self.reason = ""
        self.version = "?"
        self.in_flight: dict[str, Watch] = {}  # prompt_id -> watch, once POST /prompt returned
        self.abandoned: set[str] = set()       # prompt ids given up while the server was unreachable
        self.uploaded: set[str] = set()
        self.clips = self.failures = self.requeued = 0
        self.seconds = 0.0
        self.readmitted = 0
        self.active = 0                        # attempts running here (upload, queue, wait, download)

    # ------------------------------------------------------------------ state
    def step(self) -> str:
        steps = [w.step for w in self.in_flight.values() if w.step]
        if self.state != "alive":
            return self.state
        return f"{steps[-1][0]}/{steps[-1][1]}" if steps else ("queued" if self.in_flight else "idle")

    def _event(self, kind: str, data: dict, forward) -> None:
        if forward is not None:
            forward(kind, data)

    # ------------------------------------------------------------------ admission
    async def admit(self, prompts: list[dict], skip_nodes: tuple[str, ...]) -> bool:
        """Check the server can run every prompt and open its websocket; False (with `reason`) if not."""
        try:
            stats = await self.client.system_stats()
            system = stats.get("system")
            self.version = str(system.get("comfyui_version", "?") if isinstance(system, dict) else "?")[:40]
            info = await self.client.object_info()
        except (AccessDenied, BadAnswer) as e:
            self._set("excluded", str(e))
            return False
        except ServerLost as e:
            self._set("dead", str(e))
            return False
        problems = []
        for p in prompts:
            problems += [x for x in check_against_server(p, info, skip_nodes) if x not in problems]
        if problems:
            self._set("excluded", "; ".join(problems))
            return False
        try:
            await self.client.listen()
        except AccessDenied as e:
            self._set("excluded", str(e))
            return False
        except ServerLost as e:
            self._set("dead", str(e))
            return False
        self._set("alive", "")
        return True

    def _set(self, state: str, reason: str) -> None:
        if state == "alive" and self.state == "dead":
            self.readmitted += 1
            log.warning("server %s is back: re-admitted", self.name)
        elif state == "dead" and self.state != "dead":
            log.warning("server %s is unreachable (%s); its prompts go to other servers, probing it", self.name, reason)
        elif state == "excluded" and self.state != "excluded":  # once, however many prompts were in flight
            log.error("server %s cannot be used: %s", self.name, reason)
        self.state, self.reason = state, reason

    def exclude(self, reason: str) -> None:
        """Stop using a server that refused our credentials mid-batch; its prompts go elsewhere."""
        self._set("excluded", reason)
        for pid, w in list(self.in_flight.items()):
            self.abandoned.add(pid)
            if not w.done.done():
                w.done.set_exception(ServerLost(f"{self.name}: {reason}"))

    def mark_dead(self, reason: str) -> None:
        """Fail every prompt in flight here with ServerLost; they are re-queued elsewhere."""
        self._set("dead", reason)
        self.uploaded.clear()
        for pid, w in list(self.in_flight.items()):
            self.abandoned.add(pid)
            if not w.done.done():
                w.done.set_exception(ServerLost(f"{self.name}: {reason}"))

    # ------------------------------------------------------------------ watch
    async def monitor(self, prompts: list[dict], skip_nodes: tuple[str, ...], finished: asyncio.Event) -> None:
        """Reconnect a dropped websocket or declare the server dead; probe a dead one until it comes back."""
        delay = PROBE_MIN
        while not finished.is_set() and self.state != "excluded":
            if self.state == "alive":
                await _first(self.client.ws_lost.wait(), finished.wait())
                if finished.is_set() or self.state == "excluded":  # excluded meanwhile (a 401/403): stays out
                    return
                if not await self._reconnect():
                    self.mark_dead("websocket closed and the server does not answer")
                delay = PROBE_MIN
                continue
            await _first(asyncio.sleep(delay), finished.wait())
            if finished.is_set():
                return
            if await self.admit(prompts, skip_nodes):
                await self._forget_abandoned()
            delay = min(delay * 2, PROBE_MAX)

    async def _reconnect(self) -> bool:
        self.uploaded.clear()  # a restarted server may have lost its input folder
        for attempt in range(RECONNECT_TRIES):
            try:
                await self.client.listen()
            except AccessDenied as e:
                self.exclude(str(e))
                return True  # not dead: excluded, and monitor() stops
            except ServerLost:
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            await self._reconcile()
            return True
        return False

    async def _reconcile(self) -> None:
        """After a websocket reconnect: events may have been missed; ask the server about each prompt."""
        try:
            running, pending = await self.client.queue_ids()
            queued = running | pending
            for pid, w in list(self.in_flight.items()):
                if w.done.done() or pid in queued:
                    continue
                if await self.client.history(pid) is not None:
                    w.done.set_result("history")
                else:
                    w.done.set_exception(ServerLost(f"{self.name} lost prompt {pid} (restarted?)"))
        except AccessDenied as e:
            self.exclude(str(e))
        except ServerLost as e:
            self.mark_dead(str(e))

    async def _forget_abandoned(self) -> None:
        """A re-admitted server may still hold prompts we re-queued elsewhere: drop them there."""
        for pid in list(self.abandoned):
            await self.client.cancel(pid)
            self.abandoned.discard(pid)

    async def upload(self, uploads: dict[str, str]) -> None:
        for name, local in uploads.items():
            if name in self.uploaded:
                continue
            got = await self.client.upload_image(local, name.rsplit("/", 1)[-1])
            if got != name:
                raise ServerLost(f"{self.name}: uploaded {local} as {got!r}, expected {name!r}")
            self.uploaded.add(name)


async def _first(*aws) -> None:
    """Wait until the first of several awaitables finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

