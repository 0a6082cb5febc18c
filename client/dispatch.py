"""A batch of prompts over N ComfyUI servers: least-loaded first, `per_server` in flight on each,
outputs downloaded and renamed atomically, every step in the manifest.

Faults: a server that dies, drops its websocket for good, loses a prompt or times out has the
pair re-queued on another server (at most `retries` times per pair); dead servers are probed
and re-admitted. A prompt ComfyUI refuses (validation) or that raises in a node is not retried:
its error goes to the manifest and the summary. Ctrl-C interrupts the prompts in flight.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
import uuid
from dataclasses import dataclass

from .api_client import (TERMINAL, AccessDenied, NodeFailed, PromptInterrupted, PromptRejected, ServerLost, Watch,
                         execution_seconds, format_node_error, history_error)
from .job import Job
from .manifest import Manifest
from .outputs import save_outputs
from .servers import ServerSlot
from .transport import DEFAULT_MAX_DOWNLOAD_MB, ServerAddress

log = logging.getLogger(__name__)
HISTORY_WAIT = 10.0  # s for the history entry to appear after the terminal websocket message


class PromptTimeout(TimeoutError):
    pass


class NoServer(RuntimeError):
    """No server can run the batch (all unreachable or unable to run the workflow)."""


@dataclass
class Settings:
    per_server: int = 1
    retries: int = 2
    timeout: float | None = 3600.0
    server_wait: float = 300.0
    poll: float = 5.0
    progress: bool = True
    max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB


class Dispatcher:
    def __init__(self, addresses: list[ServerAddress], manifest: Manifest, settings: Settings,
                 skip_nodes: tuple[str, ...] = ()):
        self.manifest = manifest
        self.settings = settings
        self.skip_nodes = skip_nodes
        self.servers: list[ServerSlot] = []
        for address in addresses:
            self.add_server(address)
        self.stopping = False
        self.posts = 0
        self.bar = None
        self._last_refresh = 0.0
        self._running: dict[asyncio.Task, tuple[Job, ServerSlot]] = {}

    # ------------------------------------------------------------------ the batch
    def add_server(self, address: ServerAddress) -> None:
        slot = ServerSlot(address, self.settings.per_server, on_event=self._on_event,
                          max_download_mb=self.settings.max_download_mb)
        if all(s.name != slot.name for s in self.servers):  # the same server given twice is used once
            self.servers.append(slot)

    def run(self, todo: list[Job]) -> None:
        """Run the jobs `triage` left to do."""
        if todo:
            asyncio.run(self.run_async(todo))

    async def run_async(self, todo: list[Job]) -> None:
        if not self.servers:
            raise NoServer("no server given")
        prompts = [j.prompt for j in todo]
        await asyncio.gather(*(s.admit(prompts, self.skip_nodes) for s in self.servers))
        if not any(s.state == "alive" for s in self.servers):
            await self._close()
            raise NoServer("no server can run this batch:\n" + "\n".join(f"  {s.name}: {s.state}: {s.reason}"
                                                                      for s in self.servers))
        finished = asyncio.Event()
        monitors = [asyncio.create_task(s.monitor(prompts, self.skip_nodes, finished)) for s in self.servers]
        self._install_sigint()
        self.bar = _bar(len(todo), self.settings.progress)
        try:
            await self._loop(collections.deque(todo))
        finally:
            finished.set()
            await asyncio.gather(*monitors, return_exceptions=True)
            self._remove_sigint()
            if self.bar is not None:
                self.bar.close()
            await self._close()

    def triage(self, jobs: list[Job]) -> list[Job]:
        """Record the pairs that failed before dispatch; leave out those the manifest has done; the rest."""
        todo = []
        for job in jobs:
            if job.error is not None:
                job.status = "failed"
                self.manifest.write(job.key, "failed", error=job.error, **job.meta)
                log.error("%s: %s", job.key, job.error)
            elif self.manifest.done(job.key, job.fingerprint):
                job.status = "skipped"
            else:
                todo.append(job)
        skipped = sum(j.status == "skipped" for j in jobs)
        if skipped:
            log.info("%d pair(s) already done in %s: skipped", skipped, self.manifest.path)
        return todo

    async def _loop(self, pending: collections.deque) -> None:
        no_server_since = None
        while (pending or self._running) and not self.stopping:
            self._assign(pending)
            if not self._running:
                if not any(s.state == "dead" for s in self.servers):
                    self._fail_all(pending, "no server left that can run this workflow")
                    break
                no_server_since = no_server_since or time.monotonic()
                if time.monotonic() - no_server_since > self.settings.server_wait:
                    self._fail_all(pending, f"no server came back within {self.settings.server_wait:g} s")
                    break
                await asyncio.sleep(0.25)
                continue
            no_server_since = None
            done, _ = await asyncio.wait(list(self._running), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                job, srv = self._running.pop(task)
                srv.active -= 1
                self._settle(job, srv, *task.result(), pending)
        if self._running:  # Ctrl-C: let the attempts cancel their prompts
            await asyncio.gather(*self._running, return_exceptions=True)
            for task, (job, srv) in list(self._running.items()):
                srv.active -= 1
                self._settle(job, srv, *(task.result() if not task.cancelled() else ("interrupted", "")), pending)
            self._running.clear()

    def _assign(self, pending: collections.deque) -> None:
        """Start as many pending jobs as servers have room for, each on the least-loaded server."""
        for job in list(pending):
            srv = self._pick(job)
            if srv is None:
                continue
            pending.remove(job)
            srv.active += 1
            self._running[asyncio.create_task(self._attempt(srv, job))] = (job, srv)

    def _pick(self, job: Job) -> ServerSlot | None:
        alive = [s for s in self.servers if s.state == "alive"]
        room = [s for s in alive if s.active < s.per_server]
        fresh = [s for s in room if s.name not in job.avoid]
        if not fresh and any(s.name not in job.avoid for s in alive):
            return None  # a server this pair has not failed on will have room soon
        choice = fresh or room
        if not choice:
            return None
        return min(choice, key=lambda s: (max(s.active, s.client.queue_remaining), s.clips, self.servers.index(s)))

    def _settle(self, job: Job, srv: ServerSlot, outcome: str, error: str, pending: collections.deque) -> None:
        rec = dict(server=srv.name, prompt_id=job.prompt_id, seed=job.seed, attempt=job.attempts,
                   fingerprint=job.fingerprint, **job.meta)
        if outcome == "done":
            job.status, job.server = "done", srv.name
            srv.clips += 1
            srv.seconds += job.seconds
            self.manifest.write(job.key, "done", seconds=round(job.seconds, 3), server_seconds=job.server_seconds,
                                phases={k: round(v, 4) for k, v in job.phases.items()},
                                files=[self.manifest.key(f) for f in job.files], **rec)
            self._advance()
        elif outcome == "interrupted" or (outcome == "retry" and self.stopping):
            job.status = "interrupted"
            self.manifest.write(job.key, "interrupted", error="interrupted (Ctrl-C)", **rec)
        elif outcome == "retry" and job.attempts <= self.settings.retries:
            srv.requeued += 1
            job.avoid.add(srv.name)
            self.manifest.write(job.key, "requeued", error=error, **rec)
            log.warning("%s: %s; re-queued (attempt %d of %d)", job.key, error, job.attempts + 1,
                        self.settings.retries + 1)
            pending.appendleft(job)
        else:
            if outcome == "retry":
                srv.requeued += 1
                error = f"gave up after {job.attempts} attempts; last: {error}"
            job.status, job.error, job.server = "failed", error, srv.name
            srv.failures += 1
            self.manifest.write(job.key, "failed", error=error, **rec)
            log.error("%s failed on %s: %s", job.key, srv.name, error)
            self._advance()

    def _fail_all(self, pending: collections.deque, error: str) -> None:
        while pending:
            job = pending.popleft()
            job.status, job.error = "failed", error
            self.manifest.write(job.key, "failed", error=error, attempt=job.attempts, **job.meta)
            log.error("%s: %s", job.key, error)
            self._advance()

    # ------------------------------------------------------------------ one attempt
    async def _attempt(self, srv: ServerSlot, job: Job) -> tuple[str, str]:
        """('done' | 'failed' | 'retry' | 'interrupted', error) of one try of a job on one server."""
        job.attempts += 1
        t0 = time.monotonic()
        pid = job.prompt_id = str(uuid.uuid4())
        watch = srv.client.watch(pid)
        posted = False
        try:
            await srv.upload(job.uploads)
            t1 = time.monotonic()
            self.manifest.write(job.key, "running", server=srv.name, prompt_id=pid, attempt=job.attempts,
                                seed=job.seed, fingerprint=job.fingerprint)
            posted = True  # from here the server may hold the prompt, even if the POST fails
            await srv.client.queue_prompt(job.prompt, pid)
            self.posts += 1
            watch.posted = t2 = time.monotonic()
            srv.in_flight[pid] = watch
            entry = await self._wait(srv, watch)
            t3 = time.monotonic()
            failure = history_error(entry)
            if failure is not None:
                kind, data = failure
                if kind == "execution_interrupted":
                    raise PromptInterrupted(f"{srv.name} interrupted the prompt (someone called /interrupt)")
                raise NodeFailed(format_node_error(data))
            job.files = await save_outputs(srv.client, job, entry)
            job.seconds = time.monotonic() - t0
            job.server_seconds = execution_seconds(entry)
            job.phases = {"upload": t1 - t0, "post": t2 - t1, "wait": t3 - t2, "download": t0 + job.seconds - t3}
            return "done", ""
        except PromptRejected as e:
            return "failed", srv.client.redact(f"ComfyUI refused the prompt: {e}")
        except NodeFailed as e:
            return "failed", srv.client.redact(str(e))
        except AccessDenied as e:
            srv.exclude(str(e))  # reported once; the pair goes to another server
            return "retry", srv.client.redact(str(e))
        except (ServerLost, PromptTimeout, PromptInterrupted) as e:
            if isinstance(e, ServerLost) and srv.state == "alive" and not await self._answers(srv):
                srv.mark_dead(str(e))
            if posted and srv.state == "alive":
                await srv.client.cancel(pid)  # it must not go on here while it runs elsewhere (timeout)
            elif posted:
                srv.abandoned.add(pid)
            return "retry", srv.client.redact(str(e))
        except OSError as e:
            return "failed", f"could not write the output: {e}"
        except asyncio.CancelledError:
            if posted:
                await srv.client.cancel(pid)
            return "interrupted", ""
        except Exception as e:  # a bug or an answer this client does not understand: fail the pair, say why
            log.debug("%s on %s", job.key, srv.name, exc_info=True)
            return "failed", srv.client.redact(f"client error: {type(e).__name__}: {e}")
        finally:
            srv.in_flight.pop(pid, None)
            srv.client.unwatch(pid)
            if watch.done.done() and not watch.done.cancelled():
                watch.done.exception()  # retrieved: a ServerLost set by mark_dead is handled above

    async def _answers(self, srv: ServerSlot) -> bool:
        try:
            await srv.client.system_stats()
            return True
        except ServerLost:
            return False

    async def _wait(self, srv: ServerSlot, watch: Watch) -> dict:
        """The history entry once the prompt ends; polls /history too, in case an event was missed."""
        timeout = self.settings.timeout
        while True:
            base = watch.started or watch.posted
            left = timeout - (time.monotonic() - base) if timeout else self.settings.poll
            # once execution_* arrived, the history entry is moments away even if `executing` gets lost
            poll = 0.1 if any(e in TERMINAL for e in watch.events) else self.settings.poll
            try:
                await asyncio.wait_for(asyncio.shield(watch.done), max(0.01, min(poll, left)))
            except asyncio.TimeoutError:
                pass
            if watch.done.done():
                watch.done.result()  # raises ServerLost when the server died meanwhile
                deadline = time.monotonic() + HISTORY_WAIT
                while time.monotonic() < deadline:
                    entry = await srv.client.history(watch.prompt_id)
                    if entry is not None:
                        return entry
                    await asyncio.sleep(0.05)
                raise ServerLost(f"{srv.name}: prompt {watch.prompt_id} ended but has no history entry")
            entry = await srv.client.history(watch.prompt_id)
            if entry is not None:
                return entry
            if timeout and time.monotonic() - (watch.started or watch.posted) > timeout:
                raise PromptTimeout(f"{srv.name}: prompt {watch.prompt_id} ran over --timeout {timeout:g} s")

    # ------------------------------------------------------------------ progress, Ctrl-C
    def _on_event(self, kind: str, data: dict) -> None:
        if self.bar is None or kind not in ("progress", "execution_start", "executing", "status"):
            return
        t = time.monotonic()
        if t - self._last_refresh > 0.2:
            self._last_refresh = t
            self.bar.set_postfix_str("  ".join(f"{s.name} {s.step()}" for s in self.servers), refresh=True)

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def _install_sigint(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self.interrupt)
            self._sigint = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            self._sigint = False

    def _remove_sigint(self) -> None:
        if getattr(self, "_sigint", False):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    def interrupt(self) -> None:
        """Stop dispatching and interrupt the prompts in flight (Ctrl-C)."""
        if not self.stopping:
            log.warning("interrupted: cancelling %d prompt(s) in flight", len(self._running))
        self.stopping = True
        for task in self._running:
            task.cancel()

    async def _close(self) -> None:
        await asyncio.gather(*(s.client.close() for s in self.servers), return_exceptions=True)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="clip", desc="clips", disable=not enabled, dynamic_ncols=True)


def summary(dispatcher: Dispatcher, jobs: list[Job]) -> str:
    """The table printed at the end of a batch: per server clips, seconds, failures; then failed pairs."""
    rows = [("server", "version", "state", "clips", "seconds", "failed", "re-queued")]
    for s in dispatcher.servers:
        rows.append((s.name, s.version, s.state + (f" (back x{s.readmitted})" if s.readmitted else ""),
                     str(s.clips), f"{s.seconds:.1f}", str(s.failures), str(s.requeued)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    counts = collections.Counter(j.status for j in jobs)
    lines.append(f"{counts['done']} done, {counts['failed']} failed, {counts['skipped']} already done, "
                 f"{counts['interrupted']} interrupted, {counts['pending']} not run; "
                 f"{sum(s.requeued for s in dispatcher.servers)} re-queued after server faults")
    for s in dispatcher.servers:
        if s.state == "excluded":
            lines.append(f"server {s.name} was not used: {s.reason}")
    for j in jobs:
        if j.status == "failed":
            lines.append(f"FAILED {j.key}: {j.error}")
    return "\n".join(lines)

