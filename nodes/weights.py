from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..samplers.validation import check_model, fail
from ..weights.apply import apply_backward_weights
from ..weights.format import BackwardWeightsError
from .common import CATEGORY, MODEL_FOLDER


class SVDInbetweenLoadBackwardWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenLoadBackwardWeights",
            display_name="SVD Inbetween Load Backward Weights",
            category=CATEGORY,
            description="Attaches the fine-tuned backward-motion W_v'/W_o' of the 16 temporal attention layers "
                        "to an SVD model. The model itself stays unchanged; only the backward pass uses them. "
                        "Reads the pack's compact files (from `svd-inbetween convert` or the pack's trainer) and "
                        "the official release's unet/diffusion_pytorch_model.safetensors directly.",
            inputs=[
                io.Model.Input("model", tooltip="An SVD img2vid model (e.g. SVD-XT)."),
                io.Combo.Input("weights", options=folder_paths.get_filename_list(MODEL_FOLDER),
                               tooltip=f"A .safetensors file in models/{MODEL_FOLDER}/: a compact file "
                                       "(absolute or delta) or the official full UNet (absolute)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="1 = the weights as trained. Deltas are added times strength; absolute "
                                       "weights are blended W + strength * (W' - W); 0 = the model's own."),
            ],
            outputs=[io.Model.Output("model_out", display_name="MODEL", tooltip="The model carrying the backward weights.")],
        )

    @classmethod
    def validate_inputs(cls, weights) -> bool | str:
        # Checked when the prompt is queued, so a missing file never starts a run.
        if folder_paths.get_full_path(MODEL_FOLDER, weights) is None:
            return (f"SVDInbetweenLoadBackwardWeights: input 'weights': {weights!r} not found in "
                    f"models/{MODEL_FOLDER}/ (put a .safetensors file there and refresh)")
        return True

    @classmethod
    def execute(cls, model, weights, strength=1.0) -> io.NodeOutput:
        node = "SVDInbetweenLoadBackwardWeights"
        check_model(node, model, mode="trf")
        path = folder_paths.get_full_path(MODEL_FOLDER, weights)
        if path is None:
            fail(node, "weights", f"{weights!r} not found in models/{MODEL_FOLDER}/")
        try:
            return io.NodeOutput(apply_backward_weights(model, path, strength))
        except BackwardWeightsError as e:
            fail(node, "weights", str(e))
