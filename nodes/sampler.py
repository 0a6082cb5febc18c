from __future__ import annotations

from comfy_api.latest import io

from ..samplers.recurrent_euler import recurrent_euler_sampler
from ..samplers.run import make_guider, sample_inbetween
from ..samplers.settings import GenerationSettings, KeyframeConds
from ..samplers.validation import labelled
from ..samplers.vibid import vibid_sampler
from .common import CATEGORY
from .inputs import guidance_inputs, recurrence_inputs, scheduler_input

def _conds_inputs():
    return [
        io.Conditioning.Input("positive_start", tooltip="Start-frame conditioning (forward pass)."),
        io.Conditioning.Input("negative_start", tooltip="Unconditional of the forward pass."),
        io.Conditioning.Input("positive_end", tooltip="End-frame conditioning (backward pass)."),
        io.Conditioning.Input("negative_end", tooltip="Unconditional of the backward pass."),
    ]


class SVDInbetweenSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        g = guidance_inputs()
        return io.Schema(
            node_id="SVDInbetweenSampler",
            display_name="SVD Inbetween Sampler",
            category=CATEGORY,
            description="Makes the video between a start and an end frame: SVD runs forward from the start frame "
                        "and backward from the end frame, and the two are merged at every step. Mode gi (the "
                        "paper) gives the best motion and needs the backward weights; vibid is a fast preview "
                        "that needs none. Decode the output with VAE Decode.",
            inputs=[
                io.Model.Input("model", tooltip="The SVD model (SVD-XT); for modes gi and vibid_gi, through SVD Inbetween Load "
                                                "Backward Weights."),
                *_conds_inputs(),
                io.Latent.Input("latent_image", tooltip="Video latent from SVDInbetweenConditioning."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Same seed, same video; change it for another variant."),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Sampling steps: 50 for the gi modes (paper), about 25 for vibid. Fewer is faster and blurrier."),
                g["cfg"], g["mode"], *recurrence_inputs(), g["forward_weight"], g["execution"],
                scheduler_input(), g["guidance"], g["min_cfg"],
            ],
            outputs=[io.Latent.Output("latent", tooltip="The sampled video latent; decode with VAEDecode.")],
        )

    @classmethod
    def execute(cls, model, positive_start, negative_start, positive_end, negative_end, latent_image, seed, steps,
                cfg, mode, recurrence, recurrence_ratio, forward_weight, execution, scheduler="karras",
                guidance="constant", min_cfg=1.0) -> io.NodeOutput:
        settings = GenerationSettings(seed=seed, steps=steps, cfg=cfg, mode=mode, recurrence=recurrence,
                                      recurrence_ratio=recurrence_ratio, forward_weight=forward_weight,
                                      execution=execution, scheduler=scheduler, guidance=guidance, min_cfg=min_cfg)
        conds = KeyframeConds(positive_start, negative_start, positive_end, negative_end)
        return io.NodeOutput(sample_inbetween("SVDInbetweenSampler", model, conds, latent_image, settings))


class SVDInbetweenGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenGuider",
            display_name="SVD Inbetween Guider",
            category=CATEGORY,
            description="The SVD Inbetween method as a GUIDER for SamplerCustomAdvanced, to pick noise, sigmas and "
                        "sampler yourself (modes vibid and vibid_gi need SVD Inbetween ViBiD Sampler as SAMPLER).",
            inputs=[io.Model.Input("model", tooltip="The SVD model (SVD-XT); for modes gi and vibid_gi, through SVD "
                                                    "Inbetween Load Backward Weights."),
                    *_conds_inputs(), *guidance_inputs().values()],
            outputs=[io.Guider.Output("guider", tooltip="Use with SamplerCustomAdvanced and SVDInbetweenRecurrentEuler.")],
        )

    @classmethod
    def execute(cls, model, positive_start, negative_start, positive_end, negative_end, cfg, mode, forward_weight,
                execution, guidance="constant", min_cfg=1.0) -> io.NodeOutput:
        settings = GenerationSettings(cfg=cfg, mode=mode, forward_weight=forward_weight, execution=execution,
                                      guidance=guidance, min_cfg=min_cfg)
        conds = KeyframeConds(positive_start, negative_start, positive_end, negative_end)
        return io.NodeOutput(make_guider("SVDInbetweenGuider", model, conds, settings))


class SVDInbetweenRecurrentEuler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenRecurrentEuler",
            display_name="SVD Inbetween Recurrent Euler",
            category=CATEGORY,
            description="The paper's sampler for SamplerCustomAdvanced: Euler steps, the early ones repeated for "
                        "more coherent motion. Use it with SVD Inbetween Guider.",
            inputs=recurrence_inputs(),
            outputs=[io.Sampler.Output("sampler", tooltip="Use with SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, recurrence, recurrence_ratio) -> io.NodeOutput:
        with labelled("SVDInbetweenRecurrentEuler"):
            return io.NodeOutput(recurrent_euler_sampler(recurrence, recurrence_ratio))


class SVDInbetweenViBiDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SVDInbetweenViBiDSampler",
            display_name="SVD Inbetween ViBiD Sampler",
            category=CATEGORY,
            description="Fast in-betweening (ViBiDSampler) for SamplerCustomAdvanced: each step goes forward from "
                        "the start frame, then backward from the end frame. Use with SVD Inbetween Guider in mode "
                        "vibid (no extra weights) or vibid_gi; about 25 steps, cfg 1.0.",
            inputs=[
                io.Boolean.Input("cfg_pp", default=True,
                                 tooltip="On (recommended, with cfg about 1): steadier colours at low guidance, as the ViBiD "
                                         "authors use it. Off: plain Euler steps; then use a higher cfg."),
                io.Boolean.Input("dds", default=True,
                                 tooltip="On (recommended): holds the video's first and last frames on the keyframes. Turn it off "
                                         "only to compare."),
            ],
            outputs=[io.Sampler.Output("sampler", tooltip="Use with SamplerCustomAdvanced and SVDInbetweenGuider.")],
        )

    @classmethod
    def execute(cls, cfg_pp=True, dds=True) -> io.NodeOutput:
        return io.NodeOutput(vibid_sampler(cfg_pp, dds, node="SVDInbetweenViBiDSampler"))


__all__ = ["SVDInbetweenSampler", "SVDInbetweenGuider", "SVDInbetweenRecurrentEuler", "SVDInbetweenViBiDSampler"]
