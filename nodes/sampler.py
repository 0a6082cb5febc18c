from __future__ import annotations

from comfy_api.latest import io

from ..samplers.mpd import mpd_sampler
from ..samplers.recurrent_euler import recurrent_euler_sampler
from ..samplers.run import make_guider, sample_inbetween
from ..samplers.settings import MPD_SEQ, MPD_TRF, Distillation, GenerationSettings, KeyframeConds
from ..samplers.validation import labelled
from ..samplers.vibid import vibid_sampler
from .common import CATEGORY
from .inputs import guidance_inputs, recurrence_inputs, scheduler_input, steps_input

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
                        "paper, first in its own evaluation) needs the backward weights; vibid is a fast preview "
                        "that needs none. Decode the output with VAE Decode.",
            inputs=[
                io.Model.Input("model", tooltip="The SVD model (SVD-XT); for modes gi, vibid_gi and mpd_gi, through SVD "
                                                "Inbetween Load Backward Weights."),
                *_conds_inputs(),
                io.Latent.Input("latent_image", tooltip="Video latent from SVDInbetweenConditioning."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Same seed, same video; change it for another variant."),
                steps_input(),
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
                        "sampler yourself (modes vibid and vibid_gi need SVD Inbetween ViBiD Sampler as SAMPLER; mpd, "
                        "mpd_trf and mpd_gi need SVD Inbetween MPD Sampler).",
            inputs=[io.Model.Input("model", tooltip="The SVD model (SVD-XT); for modes gi, vibid_gi and mpd_gi, through "
                                                    "SVD Inbetween Load Backward Weights."),
                    *_conds_inputs(), *guidance_inputs().values()],
            outputs=[io.Guider.Output("guider", tooltip="Use with SamplerCustomAdvanced and SVDInbetweenRecurrentEuler "
                                                         "(modes gi, gi_no_finetune, trf), SVDInbetweenViBiDSampler "
                                                         "(vibid modes) or SVDInbetweenMPDSampler (mpd modes).")],
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


class SVDInbetweenMPDSampler(io.ComfyNode):
    NODE_ID = "SVDInbetweenMPDSampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name="SVD Inbetween MPD Sampler",
            category=CATEGORY,
            description="Motion Prior Distillation (ICLR 2026; the lowest DAVIS FVD in its paper's evaluation) on SVD, for "
                        "SamplerCustomAdvanced: the early steps carry the forward path's motion over to the "
                        "backward path instead of denoising it. Use with SVD Inbetween Guider in mode mpd (on "
                        "ViBiD), mpd_trf (on TRF) or mpd_gi; about 25 steps, cfg 1.0. The defaults are the "
                        "authors' constants.",
            inputs=[
                io.Float.Input("mpd_distill_fraction", default=MPD_SEQ.fraction, min=0.0, max=1.0, step=0.01,
                               tooltip="Modes mpd, mpd_gi: the first steps that distil, as a share of the steps "
                                       "(step i distils while i < fraction x steps). Authors: 0.2."),
                io.Int.Input("mpd_distill_iterations", default=MPD_SEQ.iterations, min=1, max=100,
                             tooltip="Modes mpd, mpd_gi: distillations (one forward denoise and a re-noise each) "
                                     "per distilling step, before its ViBiD step. Authors: 3."),
                io.Float.Input("mpd_trf_distill_fraction", default=MPD_TRF.fraction, min=0.0, max=1.0, step=0.01,
                               tooltip="Mode mpd_trf: the first steps that distil, as a share of the steps. "
                                       "Authors: 0.1 (at 25 steps: steps 0, 1 and 2)."),
                io.Int.Input("mpd_trf_distill_iterations", default=MPD_TRF.iterations, min=1, max=100,
                             tooltip="Mode mpd_trf: distillations per distilling step, before its ViBiD step. "
                                     "Authors: 1."),
                io.Int.Input("mpd_trf_repeats", default=MPD_TRF.repeats, min=0, max=100,
                             tooltip="Mode mpd_trf: the later steps' fused passes that are re-noised and done "
                                     "again, before the final pass. Authors: 3."),
                io.Boolean.Input("cfg_pp", default=True,
                                 tooltip="On (as the authors, with cfg 1): every step follows the forward path's "
                                         "unconditional prediction (CFG++). Off: plain Euler steps."),
                io.Boolean.Input("dds", default=True,
                                 tooltip="On (as the authors): the distillation and ViBiD steps hold the first and "
                                         "last frames on the keyframes. mpd_trf's fused steps never pin."),
            ],
            outputs=[io.Sampler.Output("sampler", tooltip="Use with SamplerCustomAdvanced and SVDInbetweenGuider "
                                                          "in an mpd mode.")],
        )

    @classmethod
    def execute(cls, mpd_distill_fraction=MPD_SEQ.fraction, mpd_distill_iterations=MPD_SEQ.iterations,
                mpd_trf_distill_fraction=MPD_TRF.fraction, mpd_trf_distill_iterations=MPD_TRF.iterations,
                mpd_trf_repeats=MPD_TRF.repeats, cfg_pp=True, dds=True) -> io.NodeOutput:
        with labelled(cls.NODE_ID):
            return io.NodeOutput(mpd_sampler(
                cfg_pp, dds, Distillation(mpd_distill_fraction, mpd_distill_iterations),
                Distillation(mpd_trf_distill_fraction, mpd_trf_distill_iterations, mpd_trf_repeats), node=cls.NODE_ID))


__all__ = ["SVDInbetweenSampler", "SVDInbetweenGuider", "SVDInbetweenRecurrentEuler", "SVDInbetweenViBiDSampler",
           "SVDInbetweenMPDSampler"]
