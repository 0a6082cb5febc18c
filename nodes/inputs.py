"""Input definitions shared by several nodes (same ranges, defaults and tooltips everywhere)."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..attention_patch.modes import MODE_HELP, MODE_TABLE, MODES
from ..samplers.execution import EXECUTIONS
from ..samplers.guidance import GUIDANCE
from ..samplers.request import MAX_SIZE, MIN_SIZE
from ..conditioning.keyframes import RESIZE_MODES

MODE_TOOLTIP = "; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()) + ". The node's help page compares them."


def _own(setting: str) -> str:
    """'gi 50, vibid 25, ...': each mode's own value of a setting, grouped, from the mode table."""
    groups: dict[str, list[str]] = {}
    for name, mode in MODE_TABLE.items():
        groups.setdefault(f"{getattr(mode, setting):g}", []).append(name)
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items())


def steps_input() -> io.Int.Input:
    return io.Int.Input("steps", default=0, min=0, max=10000,
                        tooltip=f"Sampling steps; 0 = the mode's own ({_own('steps')}). Fewer is faster and "
                                "blurrier.")


def size_inputs():
    return [
        io.Int.Input("width", default=1024, min=MIN_SIZE, max=MAX_SIZE, step=8,
                     tooltip="Video width in pixels (multiple of 8). SVD-XT knows 1024x576 best; smaller is faster and "
                             "needs less memory."),
        io.Int.Input("height", default=576, min=MIN_SIZE, max=MAX_SIZE, step=8,
                     tooltip="Video height in pixels (multiple of 8). SVD-XT knows 1024x576 best; smaller is faster and "
                             "needs less memory."),
    ]


def keyframe_encoding_inputs():
    """SVD's conditioning settings and how the keyframes are fitted to the video size."""
    return [
        io.Int.Input("motion_bucket_id", default=127, min=1, max=1023,
                     tooltip="How much things move: higher gives more motion, lower calmer in-betweens (SVD's default 127)."),
        io.Int.Input("fps", default=7, min=1, max=1024, tooltip="The frame rate SVD is told it makes (default 7): changes the motion per frame, not the saved "
                             "file's frame rate."),
        io.Float.Input("augmentation_level", default=0.02, min=0.0, max=10.0, step=0.01,
                       tooltip="A little noise on the keyframes: more lets the video drift further from them, 0 keeps it "
                               "closest (paper: 0.02; half as strong as the same number in ComfyUI's stock SVD node)."),
        io.Combo.Input("resize", options=list(RESIZE_MODES), default="crop",
                       tooltip="How keyframes of another shape fit the video: crop fills it and cuts the edges, stretch "
                               "squeezes the image, pad keeps all of it with grey borders."),
    ]


def guidance_inputs() -> dict[str, io.Input]:
    """cfg, mode, forward_weight, execution, guidance, min_cfg by id (nodes order them differently)."""
    inputs = [
        io.Float.Input("cfg", default=0.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip=f"How strongly the video follows the keyframes; 0 = the mode's own ({_own('cfg')}). "
                               "Too high gives harsh, jittery frames."),
        io.Combo.Input("mode", options=list(MODES), default="gi", tooltip=MODE_TOOLTIP),
        io.Float.Input("forward_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="Balance between following the start frame and the end frame: 0.5 = both equally, 1.0 = "
                               "plain SVD from the start frame. Not used by the vibid and mpd modes."),
        io.Combo.Input("execution", options=list(EXECUTIONS), default="auto",
                       tooltip="Same video, different speed and memory: batched is fastest and needs the most memory, "
                               "sequential needs less and is slower, lowvram needs the least and is slowest (small "
                               "GPUs); auto picks the fastest that fits. Out of memory? Pick sequential or lowvram."),
        io.Combo.Input("guidance", options=list(GUIDANCE), default="constant", optional=True,
                       tooltip="constant: the same cfg on every frame (the paper). linear: weaker guidance near each "
                               "keyframe, rising to cfg (SVD's usual video guidance)."),
        io.Float.Input("min_cfg", default=1.0, min=0.0, max=100.0, step=0.1, optional=True,
                       tooltip="Guidance right at the keyframes when guidance is linear."),
    ]
    return {i.id: i for i in inputs}


def recurrence_inputs():
    return [
        io.Int.Input("recurrence", default=5, min=0, max=100,
                     tooltip="Extra passes on the early steps: smoother, more coherent motion; each pass costs about one "
                             "step (paper: 5; 0 = fastest). Not used by the vibid and mpd modes."),
        io.Float.Input("recurrence_ratio", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="Share of the steps, from the start, that get the extra passes (paper: 0.5): more is more "
                               "coherent and slower."),
    ]


def scheduler_input():
    return io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="karras",
                          optional=True, tooltip="Noise schedule; SVD uses karras. Leave it unless you experiment.")
