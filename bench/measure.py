"""Measuring a scheme: UNet calls, wall time, peak memory."""
from __future__ import annotations

import ctypes
import gc
import threading
import time

import psutil
import torch

from ..attention_patch.run_state import RUN_KEY


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS so the next RSS baseline is not inflated by the last run."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_rss_peak() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (the kernel's own RSS high-water mark)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of the code inside the `with` block.

    CUDA: torch.cuda.max_memory_allocated over the block (absolute: weights included).
    CPU: peak process RSS above the RSS at entry, so weights loaded before the block are
    not counted and a copy made inside it is. The peak is the kernel's VmHWM after a
    reset (exact); where that is unavailable, RSS sampled in a thread every `interval` s.
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False
        self._base = 0
        self._max = 0

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self._max = max(self._max, proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        _trim_heap()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base = self._max = psutil.Process().memory_info().rss
        self._hwm = _reset_rss_peak()
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        if self._hwm:
            self._max = _status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
        self._max = max(self._max, psutil.Process().memory_info().rss)
        self.peak_bytes = self._max - self._base


class Stopwatch:
    """Wall time, and the process's CPU time (all threads): on a shared CPU the latter is the work done."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0


class UnetCounter:
    """model_function_wrapper counting UNet calls and the videos in their batches.

    It also keeps the pack's per-run state object it sees in transformer_options, so the
    bytes of maps the guider held at peak can be read after the run.
    """

    def __init__(self, frames: int):
        self.frames = frames
        self.calls = 0
        self.videos = 0
        self.per_call: list[int] = []  # videos in each call, in call order
        self.run = None

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options; every clone must count into this object.
        return self

    def __call__(self, apply_model, args):
        self.calls += 1
        self.per_call.append(args["input"].shape[0] // self.frames)
        self.videos += self.per_call[-1]
        self.run = args["c"].get("transformer_options", {}).get(RUN_KEY, self.run)
        return apply_model(args["input"], args["timestep"], **args["c"])

