"""Input definitions shared by several nodes (same ranges, defaults and tooltips everywhere)."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

import nodes as comfy_nodes

from ..attention_patch.layers import MODE_HELP, MODES
from ..samplers.execution import EXECUTIONS
from ..samplers.guidance import GUIDANCE
from ..samplers.keyframes import RESIZE_MODES

MODE_TOOLTIP = "; ".join(f"{k}: {v}" for k, v in MODE_HELP.items())


def size_inputs():
    return [
        io.Int.Input("width", default=1024, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                     tooltip="Video width in pixels (multiple of 8)."),
        io.Int.Input("height", default=576, min=64, max=comfy_nodes.MAX_RESOLUTION, step=8,
                     tooltip="Video height in pixels (multiple of 8)."),
    ]


def keyframe_encoding_inputs():
    """SVD's conditioning settings and how the keyframes are fitted to the video size."""
    return [
        io.Int.Input("motion_bucket_id", default=127, min=1, max=1023,
                     tooltip="SVD motion strength id; higher moves more."),
        io.Int.Input("fps", default=7, min=1, max=1024, tooltip="Frame-rate id given to SVD."),
        io.Float.Input("augmentation_level", default=0.02, min=0.0, max=10.0, step=0.01,
                       tooltip="Noise added to the keyframes before VAE encoding, in SVD's [-1, 1] "
                               "pixel space (ComfyUI's stock node uses [0, 1], i.e. twice as strong)."),
        io.Combo.Input("resize", options=list(RESIZE_MODES), default="crop",
                       tooltip="crop: fill the frame, centre-crop (keeps aspect); stretch: distort to "
                               "fit (the research code); pad: fit inside, grey borders."),
    ]


def guidance_inputs() -> dict[str, io.Input]:
    """cfg, mode, forward_weight, execution, guidance, min_cfg by id (nodes order them differently)."""
    inputs = [
        io.Float.Input("cfg", default=2.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Guidance scale of each direction. The paper's 1..3 per-frame ramp averaged "
                               "with its flip is a constant 2.0."),
        io.Combo.Input("mode", options=list(MODES), default="gi", tooltip=MODE_TOOLTIP),
        io.Float.Input("forward_weight", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="Weight of the forward prediction in the fusion; 1.0 = plain SVD from the start frame. "
                               "Not used by the vibid modes."),
        io.Combo.Input("execution", options=list(EXECUTIONS), default="auto",
                       tooltip="batched: one UNet call per step for both directions, no stored maps (fast); "
                               "sequential: two calls, maps held in between (less memory); auto: batched if it fits."),
        io.Combo.Input("guidance", options=list(GUIDANCE), default="constant", optional=True,
                       tooltip="constant: cfg on every frame; linear: per-frame ramp min_cfg -> cfg away from "
                               "each direction's keyframe (SVD's VideoLinearCFGGuidance, per direction)."),
        io.Float.Input("min_cfg", default=1.0, min=0.0, max=100.0, step=0.1, optional=True,
                       tooltip="Guidance at each direction's keyframe when guidance is linear."),
    ]
    return {i.id: i for i in inputs}


def recurrence_inputs():
    return [
        io.Int.Input("recurrence", default=5, min=0, max=100,
                     tooltip="Extra passes per early step after re-noising (paper: 5). 0 = plain Euler. "
                             "Not used by the vibid modes."),
        io.Float.Input("recurrence_ratio", default=0.5, min=0.0, max=1.0, step=0.05,
                       tooltip="Fraction of the steps, from the start, that get the extra passes (paper: 0.5)."),
    ]


def scheduler_input():
    return io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="karras",
                          optional=True, tooltip="Sigma schedule; SVD uses karras.")
