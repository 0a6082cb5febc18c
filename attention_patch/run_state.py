"""Per-run state read by the temporal attention proxies.

A run owns one `InbetweenRun`. The guider puts it in `transformer_options`
under RUN_KEY for the UNet calls of a dual-direction step; ComfyUI copies dicts
there but passes objects by reference, so every proxy sees the same instance.

The batch of a UNet call is a list of chunks, one per entry of
`transformer_options["cond_or_uncond"]` (indices into the guider's cond list).
The guider's cond list is laid out so that:
    0: negative_end   (backward, uncond)   partner 2
    1: positive_end   (backward, cond)     partner 3
    2: negative_start (forward, uncond)    partner 0
    3: positive_start (forward, cond)      partner 1
ComfyUI batches conds in reverse list order, so if memory forces it to split
a step into several calls, forward chunks always run before backward ones and
their maps are handed over through `store`/`take`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

RUN_KEY = "svd_inbetween_run"

BACKWARD_UNCOND, BACKWARD_COND, FORWARD_UNCOND, FORWARD_COND = 0, 1, 2, 3
PARTNER = {BACKWARD_UNCOND: FORWARD_UNCOND, BACKWARD_COND: FORWARD_COND,
           FORWARD_UNCOND: BACKWARD_UNCOND, FORWARD_COND: BACKWARD_COND}


def is_backward(cond_index: int) -> bool:
    return cond_index in (BACKWARD_UNCOND, BACKWARD_COND)


@dataclass
class InbetweenRun:
    """What the proxies need to know about the current run.

    rotate_layers: module paths (relative to diffusion_model) whose backward
        chunks use rot180 of the forward maps instead of their own Q/K.
    finetuned: backward chunks use the backward W_v'/W_o' held by the proxy.
    active: cond indices taking part in the current step (set per step).
    """
    rotate_layers: frozenset[str]
    finetuned: bool
    active: frozenset[int] = frozenset()
    maps: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    peak_map_bytes: int = 0

    def needs_maps(self, layer: str, cond_index: int) -> bool:
        """A forward chunk must produce maps when its backward partner runs this step."""
        return (layer in self.rotate_layers and not is_backward(cond_index)
                and PARTNER[cond_index] in self.active)

    def store(self, layer: str, cond_index: int, maps: torch.Tensor) -> None:
        self.maps[(layer, cond_index)] = maps
        held = sum(m.numel() * m.element_size() for m in self.maps.values())
        self.peak_map_bytes = max(self.peak_map_bytes, held)

    def take(self, layer: str, cond_index: int) -> torch.Tensor:
        try:
            return self.maps.pop((layer, cond_index))
        except KeyError:
            raise RuntimeError(
                f"SVD inbetween: no forward attention maps for {layer} (cond {cond_index}); "
                "the forward chunk must run before its backward partner") from None

    def clear(self) -> None:
        self.maps.clear()
