"""What each sampler mode means: the one table everything else asks.

rotation: which temporal attn1 layers give the backward pass the rotated forward maps
    ("all" 16, "up" the output blocks only, "none" plain time-reversed pass);
finetuned: the backward pass uses the fine-tuned W_v'/W_o' (needs backward weights);
schedule: the sampler loop --
    "fused" (one fused prediction of both directions per step, recurrent Euler);
    "alternating" (ViBiD: a forward then a backward denoise per step, one direction per call);
    "mpd" (Motion Prior Distillation on ViBiD: early steps first distil the forward path's
        residuals into the backward path, then the alternating step);
    "mpd_trf" (MPD on TRF: early steps one distillation then the alternating step, later
        steps fused with per-frame weights 1 -> 0, repeated with re-noising);
steps, cfg: the settings the mode runs best at (its authors' / the paper's), used wherever a user leaves
    them to the mode (steps 0 and cfg 0 on the nodes, `--mode` without `--steps`/`--cfg` in the CLI, the
    blueprints, the shipped templates, the bench);
help: what a user gets, for tooltips and --help.
The combo strings (the keys) are public: workflows store them.
"""
from __future__ import annotations

from dataclasses import dataclass

ROTATIONS = ("all", "up", "none")
SCHEDULES = ("fused", "alternating", "mpd", "mpd_trf")
# The SAMPLER each schedule needs (None: any sampler; the fused prediction is a plain x0).
SCHEDULE_SAMPLER = {"fused": None, "alternating": "vibid", "mpd": "mpd", "mpd_trf": "mpd"}


@dataclass(frozen=True)
class Mode:
    name: str
    rotation: str
    finetuned: bool
    schedule: str
    steps: int
    cfg: float
    help: str

    def __post_init__(self):
        if self.rotation not in ROTATIONS or self.schedule not in SCHEDULES:
            raise ValueError(f"mode {self.name!r}: bad rotation {self.rotation!r} or schedule {self.schedule!r}")
        if self.steps < 1 or self.cfg <= 0:
            raise ValueError(f"mode {self.name!r}: its own steps and cfg must be positive")

    @property
    def settings_help(self) -> str:
        return f"{self.steps} steps, cfg {self.cfg:g}"

    @property
    def fused(self) -> bool:
        return self.schedule == "fused"

    @property
    def alternating(self) -> bool:
        return self.schedule == "alternating"

    @property
    def sampler(self) -> str | None:
        """The pack SAMPLER this mode needs ("vibid", "mpd"), None for any sampler."""
        return SCHEDULE_SAMPLER[self.schedule]

    @property
    def ramp_fusion(self) -> bool:
        """Fused predictions weigh the forward path 1 -> 0 over the frames (MPD on TRF)."""
        return self.schedule == "mpd_trf"


MODE_TABLE: dict[str, Mode] = {m.name: m for m in (
    Mode("gi", "all", True, "fused", 50, 2.0,
         "the paper's method (first in the GI paper's own evaluation), slowest; needs the backward weights"),
    Mode("gi_no_finetune", "up", False, "fused", 50, 2.0,
         "the paper without its fine-tuned weights: weaker backward motion; needs no extra file"),
    Mode("trf", "none", False, "fused", 50, 2.0,
         "baseline: forward and time-reversed SVD averaged; needs no extra file, can blend two motions"),
    Mode("vibid", "none", False, "alternating", 25, 1.0,
         "fast preview (ViBiDSampler, about 7x less work than gi); needs no extra file"),
    Mode("vibid_gi", "all", True, "alternating", 25, 1.0,
         "vibid's speed with the backward-motion model; needs the backward weights"),
    Mode("mpd", "none", False, "mpd", 25, 1.0,
         "Motion Prior Distillation on ViBiD (ICLR 2026; the lowest DAVIS FVD in the MPD paper; about 1.3x vibid's "
         "work); needs no extra file"),
    Mode("mpd_trf", "none", False, "mpd_trf", 25, 1.0,
         "Motion Prior Distillation on TRF: the best frame quality (FID) of the training-free modes (about 2.8x "
         "vibid's work); needs no extra file"),
    Mode("mpd_gi", "all", True, "mpd", 25, 1.0,
         "mpd with the backward-motion model in its backward steps; needs the backward weights"),
)}

MODES = tuple(MODE_TABLE)
FUSED_MODES = tuple(n for n, m in MODE_TABLE.items() if m.fused)
BACKWARD_WEIGHT_MODES = tuple(n for n, m in MODE_TABLE.items() if m.finetuned)
MODE_HELP = {n: f"{m.help} ({m.settings_help})" for n, m in MODE_TABLE.items()}


def mode_of(name: str) -> Mode:
    try:
        return MODE_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; choose one of {', '.join(MODES)}") from None


def rotate_layers(paths: list[str], mode: str | Mode) -> frozenset[str]:
    """The temporal attn1 paths whose backward chunks use rot180 of the forward maps."""
    rotation = (mode if isinstance(mode, Mode) else mode_of(mode)).rotation
    if rotation == "all":
        return frozenset(paths)
    if rotation == "up":
        return frozenset(p for p in paths if p.startswith("output_blocks."))
    return frozenset()
