"""The inbetween clone's memory_required: the pack's estimate for the guider's own UNet calls.

ComfyUI's calc_cond_batch batches conds in one call when memory_required(shape) * 1.5 is
below the free memory, else splits them. For SVD its generic estimate is about twice the
traced peak (samplers/execution.py), so it would split calls that fit. The guider makes its
calls inside `calibrated_call(rows, needed)`; there, and for a batch of exactly those rows,
the patched memory_required answers `needed / 1.5`. Any other shape, and every call outside
the block (stock sampling through the clone, model loading), gets ComfyUI's own answer.
"""
from __future__ import annotations

import contextlib
import contextvars

_CALL: contextvars.ContextVar[tuple[int, float] | None] = contextvars.ContextVar("svd_inbetween_call", default=None)
# calc_cond_batch batches when memory_required(shape) * COMFY_MARGIN < free memory.
COMFY_MARGIN = 1.5
MEMORY_REQUIRED = "memory_required"  # the BaseModel attribute the object patch replaces


@contextlib.contextmanager
def calibrated_call(rows: int, needed: float):
    """calc_cond_batch inside this block sees `needed` (bytes, head-room included) for a batch of `rows`."""
    token = _CALL.set((int(rows), float(needed)))
    try:
        yield
    finally:
        _CALL.reset(token)


class CalibratedMemoryRequired:
    """Stands in for a BaseModel's memory_required (object patch MEMORY_REQUIRED); immutable, shared by clones."""

    is_svd_inbetween_memory = True

    def __init__(self, original):
        self.original = original

    def __call__(self, input_shape, *args, **kwargs):
        call = _CALL.get()
        if call is not None and input_shape[0] == call[0]:
            return call[1] / COMFY_MARGIN
        return self.original(input_shape, *args, **kwargs)


def is_calibrated(obj) -> bool:
    return getattr(obj, "is_svd_inbetween_memory", False) is True
