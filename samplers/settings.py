"""The settings of one generation, shared by the nodes, the bench and the CLI's workflows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..attention_patch.modes import MODES, Mode, mode_of


@dataclass(frozen=True)
class Distillation:
    """The constants of one Motion Prior Distillation loop (samplers/mpd.py)."""
    fraction: float  # distil while step i < fraction * steps (a float comparison, as the authors')
    iterations: int  # distillation iterations (one forward denoise + re-noise each) per such step
    repeats: int = 0  # MPD on TRF: re-noised fused passes per later step, before its final pass


# The authors' constants: mpd_seq.py (MPD on ViBiD) and mpd_par.py (MPD on TRF).
MPD_SEQ = Distillation(fraction=0.2, iterations=3)
MPD_TRF = Distillation(fraction=0.1, iterations=1, repeats=3)


@dataclass(frozen=True)
class GenerationSettings:
    """Defaults are the paper's (SVD-XT, mode gi, recurrence 5 over half the steps).

    steps 0 and cfg 0 (the defaults) mean the mode's own (attention_patch/modes.py: gi 50 steps and cfg 2,
    the vibid and mpd modes 25 and 1); they are resolved on construction, so every reader sees numbers.
    recurrence, recurrence_ratio and forward_weight apply to the fused modes; cfg_pp and dds
    to the alternating (ViBiD) and MPD ones; mpd / mpd_trf to the MPD modes (schedule "mpd" /
    "mpd_trf"); min_cfg to guidance "linear".
    """
    seed: int = 0
    steps: int = 0
    cfg: float = 0.0
    mode: str = "gi"
    recurrence: int = 5
    recurrence_ratio: float = 0.5
    forward_weight: float = 0.5
    execution: str = "auto"
    scheduler: str = "karras"
    guidance: str = "constant"
    min_cfg: float = 1.0
    cfg_pp: bool = True
    dds: bool = True
    mpd: Distillation = MPD_SEQ
    mpd_trf: Distillation = MPD_TRF

    def __post_init__(self):
        spec = self.spec
        if spec is not None:
            object.__setattr__(self, "steps", self.steps or spec.steps)
            object.__setattr__(self, "cfg", self.cfg or spec.cfg)

    @property
    def spec(self) -> Mode | None:
        return mode_of(self.mode) if self.mode in MODES else None


class KeyframeConds(NamedTuple):
    """The four CONDITIONING inputs of the dual-direction guider, by their node input names."""
    positive_start: list
    negative_start: list
    positive_end: list
    negative_end: list
