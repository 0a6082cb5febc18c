from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..attention_patch.layers import without_backward_weights
from ..attention_patch.modes import BACKWARD_WEIGHT_MODES
from ..samplers.validation import check_model, fail, labelled
from ..weights.apply import apply_backward_weights
from ..weights.cache import delta_file_name
from ..weights.convert import BaseCheckpointError
from ..weights.format import BackwardWeightsError
from .common import CATEGORY, MODEL_FOLDER

log = logging.getLogger(__name__)
NONE = "none"


def _checkpoints() -> list[str]:
    return [NONE, *folder_paths.get_filename_list("checkpoints")]


class SVDInbetweenLoadBackwardWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenLoadBackwardWeights",
            display_name="SVD Inbetween Load Backward Weights",
            category=CATEGORY,
            description="Gives an SVD model the backward-motion weights that modes gi, vibid_gi and mpd_gi need (the "
                        "authors' fine-tune). The model itself stays unchanged; only the backward pass uses them. "
                        "Without the file the model passes on unchanged, so the other modes run; the modes that "
                        "need it stop before sampling and name the file. Takes the "
                        "pack's small files or the official release's unet/diffusion_pytorch_model.safetensors "
                        "directly; with base_checkpoint it sets the official weights up the authors' way on SVD-XT.",
            inputs=[
                io.Model.Input("model", tooltip="The SVD model you sample with (e.g. SVD-XT from "
                                                "Image Only Checkpoint Loader)."),
                io.Combo.Input("weights", options=folder_paths.get_filename_list(MODEL_FOLDER),
                               tooltip=f"Backward-motion weights from models/{MODEL_FOLDER}/: the official release's "
                                       "UNet file or a small converted/trained file."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="1 = the weights as trained (recommended). Lower moves the backward pass "
                                       "back towards the plain model; 0 = no fine-tune."),
                io.Combo.Input("base_checkpoint", options=_checkpoints(), default=NONE, optional=True,
                               tooltip="With the official UNet file: pick svd.safetensors (14-frame SVD, the model "
                                       "the weights were trained from) to use them on SVD-XT the authors' way. "
                                       "none: use the file as it is."),
                io.Boolean.Input("save_transplant", default=False, optional=True,
                                 tooltip=f"With base_checkpoint: also save the result as a small file in "
                                         f"models/{MODEL_FOLDER}/, so a restarted ComfyUI reads ~100 MB instead "
                                         "of the two large files."),
            ],
            outputs=[io.Model.Output("model_out", display_name="MODEL",
                                     tooltip="The same model, carrying the backward weights for the SVD Inbetween "
                                             "sampler; stock samplers see the model unchanged.")],
        )

    @classmethod
    def validate_inputs(cls, weights, base_checkpoint=NONE) -> bool | str:
        # A missing `weights` file passes here (taking `weights` also skips the host's list check): only the
        # modes that use the weights need it, and the sampler, which knows the mode, refuses those before any
        # model call. So a blueprint or workflow holding this node runs every other mode without the file.
        if base_checkpoint not in (None, NONE) and folder_paths.get_full_path("checkpoints", base_checkpoint) is None:
            return (f"SVDInbetweenLoadBackwardWeights: input 'base_checkpoint': {base_checkpoint!r} not found in "
                    "models/checkpoints/ (put svd.safetensors there and refresh, or pick none)")
        return True

    @classmethod
    def execute(cls, model, weights, strength=1.0, base_checkpoint=NONE, save_transplant=False) -> io.NodeOutput:
        with labelled("SVDInbetweenLoadBackwardWeights"):
            check_model(model, mode="trf")
            path = folder_paths.get_full_path(MODEL_FOLDER, weights)
            if path is None:
                log.info("%r not in models/%s/: the model goes on without backward weights (modes %s refuse it)",
                         weights, MODEL_FOLDER, ", ".join(BACKWARD_WEIGHT_MODES))
                return io.NodeOutput(without_backward_weights(model, f"{weights!r} is not in models/{MODEL_FOLDER}/"))
            base = saved = None
            if base_checkpoint not in (None, NONE):
                base = folder_paths.get_full_path("checkpoints", base_checkpoint)
                if base is None:
                    fail("base_checkpoint", f"{base_checkpoint!r} not found in models/checkpoints/")
                saved = os.path.join(folder_paths.get_folder_paths(MODEL_FOLDER)[0], delta_file_name(weights, base_checkpoint))
            elif save_transplant:
                fail("save_transplant", "there is nothing to save without a base_checkpoint; pick the base "
                     "(svd.safetensors) or switch save_transplant off")
            try:
                return io.NodeOutput(apply_backward_weights(model, path, strength, base, saved, save_transplant))
            except BaseCheckpointError as e:
                fail("base_checkpoint", str(e))
            except BackwardWeightsError as e:
                fail("weights", str(e))
