"""Anchor Frame Bridging against ComfyUI's native first-last-frame video on Wan 2.1: model calls and wall time.

Both graphs run for real, in process, on a tiny random Wan 2.1 I2V model built with ComfyUI's own classes
(`comfy.supported_models.WAN21_I2V`, a 2-block WanModel) and a tiny Wan 2.1 VAE (`comfy.sd.VAE` on a WanVAE
state dict):
- native: WanFirstLastFrameToVideo (81 frames) -> KSampler -> VAEDecode, one pass;
- AFB: Wan Keyframes to Video (82 frames, separate layout) -> KSampler -> Wan Keyframe Decode (forward), the same
  from end to start (reverse: a full KSampler, or BasicScheduler -> SplitSigmas at step K -> SamplerCustomAdvanced,
  whose denoised_output is decoded), Wan Anchor Frame (LPIPS on a random AlexNet), then 83 frames with the anchor
  -> KSampler -> Wan Keyframe Decode (final).
A model_function_wrapper (bench/measure.py's UnetCounter, one constant key) counts the apply_model calls and the
batch entries in them (evaluations: cond and uncond are two). Keyframes, text and CLIP vision tokens are seeded
random stand-ins (the bench measures sampling, not encoders). The memory at full size is bench/wan_memory.py.

Needs a host whose Wan 2.1 VAE branch reads its width from the state dict (ComfyUI 0.8 and newer): on 0.3.64 it
always builds the 96-wide real VAE, and the bench does not patch the host to shrink it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from statistics import median

import torch

from .measure import Stopwatch, UnetCounter
from .models import init_random

# The authors' settings (Hou et al., Wan2.1 I2V 14B 480P): 50 Euler steps at cfg 5, 832x480, the reverse pass
# stopped after K = 15 steps in their ablation; the clip lengths are docs/wan.md's.
AUTHORS_STEPS = 50
AUTHORS_CFG = 5.0
AUTHORS_STOP = 15
FRAMES = {"native": 81, "forward": 82, "reverse": 82, "final": 83}
AFB_PASSES = ("forward", "reverse", "final")
TINY_WAN = {  # head dim 16; in_dim 36 = 16 noise + 4 mask + 16 keyframe latent channels
    "image_model": "wan2.1", "model_type": "i2v", "patch_size": (1, 2, 2), "in_dim": 36, "out_dim": 16,
    "dim": 32, "ffn_dim": 64, "freq_dim": 256, "text_dim": 32, "num_heads": 2, "num_layers": 2,
    "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
TINY_TEXT_TOKENS = 8
CLIP_WIDTH = 1280  # WanModel.img_emb = MLPProj(1280, dim) on every host
TINY_CLIP_TOKENS = 17
TINY_VAE = {"dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
            "temperal_downsample": [False, True, True], "dropout": 0.0}
SCHEMES = ("native", "afb", "afb_stop")


class WanBenchUnsupported(RuntimeError):
    """The host lacks what the Wan bench needs (the message says what)."""


def stop_step(steps: int, stop: int = AUTHORS_STOP, of: int = AUTHORS_STEPS) -> int:
    """The reverse pass's K at `steps` steps: the authors' K/50 fraction, at least one step, fewer than all."""
    return min(max(1, round(stop * steps / of)), max(steps - 1, 1))


def formula(steps: int, stop: int, cfg_evaluations: int = 2) -> dict[str, dict[str, int]]:
    """Model calls and evaluations per clip with Euler (one call per step) and cond + uncond batched in a call."""
    passes = {"native": [steps], "afb": [steps] * 3, "afb_stop": [steps, stop, steps]}
    return {k: {"calls": sum(v), "evaluations": cfg_evaluations * sum(v), "passes": v} for k, v in passes.items()}


def host_ok(own_vae: bool = True) -> str | None:
    """None where the bench runs on this host (building its own tiny VAE unless `own_vae` is False), else why not."""
    import inspect

    import comfy.sd
    if own_vae and "decoder.head.0.gamma" not in inspect.getsource(comfy.sd.VAE.__init__):
        return ("this ComfyUI builds the Wan 2.1 VAE at its full width 96 whatever the state dict says (0.3.64); "
                "the Wan bench needs ComfyUI 0.8 or newer for its tiny VAE")
    import importlib.util
    if importlib.util.find_spec("lpips") is None or importlib.util.find_spec("torchvision") is None:
        return "Wan Anchor Frame needs the 'lpips' and 'torchvision' packages (pip install -r requirements.txt)"
    return None


def wan_patcher(unet_config: dict, seed: int = 0, config_class: str = "WAN21_I2V"):
    """ModelPatcher around a random Wan diffusion model made by ComfyUI's own model config class (`WAN21_I2V`;
    `WAN21_T2V` with 36 input channels is Wan2.2 I2V A14B's expert): fp32, CPU weights, ComfyUI's compute device.
    Also tests/tiny_wan.py's builder."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    mc = getattr(comfy.supported_models, config_class)(dict(unet_config))
    mc.set_inference_dtype(torch.float32, None)
    mc.custom_operations = comfy.ops.disable_weight_init
    model = mc.get_model({}, device=torch.device("cpu"))
    init_random(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def tiny_wan_patcher(seed: int = 0, config: dict | None = None):
    """The bench's tiny random Wan 2.1 I2V."""
    return wan_patcher(config or TINY_WAN, seed)


def tiny_wan_vae(seed: int = 2):
    """comfy.sd.VAE on a random 8-wide WanVAE: ComfyUI's own Wan 2.1 VAE branch (16 channels, 4x time, 8x space)."""
    import comfy.ldm.wan.vae
    import comfy.sd

    template = comfy.ldm.wan.vae.WanVAE(**TINY_VAE)
    init_random(template, seed)
    with torch.no_grad():  # RMS_norm gammas are [C, 1, 1(, 1)]: unit norms like init_random's 1-d ones
        for name, p in template.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    return comfy.sd.VAE(sd=template.state_dict())


@contextlib.contextmanager
def random_lpips_backbone(seed: int = 0):
    """A random AlexNet in torchvision's file name, first in models/lpips for the block (restored after)."""
    import folder_paths
    import torchvision

    from .. import register_model_folder
    from ..evaluation.features import LPIPS_BACKBONES
    from ..nodes.common import LPIPS_FOLDER
    register_model_folder()
    paths, exts = folder_paths.folder_names_and_paths[LPIPS_FOLDER]
    with tempfile.TemporaryDirectory(prefix="wan-bench-lpips-") as folder:
        torch.manual_seed(seed)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(),
                   os.path.join(folder, LPIPS_BACKBONES["alex"].filename))
        folder_paths.folder_names_and_paths[LPIPS_FOLDER] = ([folder] + list(paths), exts)
        try:
            yield
        finally:
            folder_paths.folder_names_and_paths[LPIPS_FOLDER] = (paths, exts)


def node(module, name: str, *args):
    """Run a ComfyUI node class with its inputs in schema order (V3 `execute`, or a V1 node's FUNCTION)."""
    cls = getattr(module, name)
    if hasattr(cls, "FUNCTION"):
        return getattr(cls(), cls.FUNCTION)(*args)
    return cls.execute(*args).args


@dataclass
class Inputs:
    width: int
    height: int
    start: torch.Tensor
    end: torch.Tensor
    positive: list
    negative: list
    clip_start: object
    clip_end: object

    @classmethod
    def random(cls, width: int, height: int, seed: int = 1) -> "Inputs":
        import comfy.clip_vision
        g = torch.Generator().manual_seed(seed)
        start, end = torch.rand(2, 1, height, width, 3, generator=g)
        pos, neg = (torch.randn(1, TINY_TEXT_TOKENS, TINY_WAN["text_dim"], generator=g) for _ in range(2))
        clips = []
        for _ in range(2):
            out = comfy.clip_vision.Output()
            out.penultimate_hidden_states = torch.randn(1, TINY_CLIP_TOKENS, CLIP_WIDTH, generator=g)
            clips.append(out)
        return cls(width, height, start, end, [[pos, {}]], [[neg, {}]], *clips)


@dataclass
class Clip:
    """One clip's passes: model calls, evaluations and sampling seconds per pass, and the whole graph's seconds."""
    calls: dict[str, int] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)
    sampling_s: dict[str, float] = field(default_factory=dict)
    graph_s: float = 0.0
    frames: int = 0


class WanGraphs:
    """The two graphs on one model, VAE and set of inputs, at `steps` steps and cfg `cfg`."""

    def __init__(self, model, vae, inputs: Inputs, steps: int, cfg: float = AUTHORS_CFG, seed: int = 0,
                 frames: dict[str, int] | None = None):
        import comfy.model_management
        self.model, self.vae, self.x, self.steps, self.cfg, self.seed = model, vae, inputs, steps, cfg, seed
        self.frames = dict(FRAMES, **(frames or {}))
        self.device = comfy.model_management.get_torch_device()

    def _sample(self, clip: Clip, name: str, run) -> dict:
        counter = UnetCounter(1)  # a Wan latent is [B, C, T, H, W]: batch entries = evaluations
        m = self.model.clone()
        m.set_model_unet_function_wrapper(counter)
        with Stopwatch(self.device) as sw:
            out = run(m)
        clip.calls[name], clip.evaluations[name], clip.sampling_s[name] = counter.calls, counter.videos, sw.seconds
        return out

    def _ksampler(self, clip: Clip, name: str, pos, neg, latent) -> dict:
        import nodes
        return self._sample(clip, name, lambda m: node(nodes, "KSampler", m, self.seed, self.steps, self.cfg, "euler",
                                                       "simple", pos, neg, latent, 1.0)[0])

    def _stopped(self, clip: Clip, name: str, pos, neg, latent, stop: int) -> dict:
        """BasicScheduler -> SplitSigmas(stop) -> SamplerCustomAdvanced: its denoised_output (the clean prediction)."""
        from comfy_extras import nodes_custom_sampler as cs

        def run(m):
            sigmas = node(cs, "BasicScheduler", m, "simple", self.steps, 1.0)[0]
            high = node(cs, "SplitSigmas", sigmas, stop)[0]
            guider = node(cs, "CFGGuider", m, pos, neg, self.cfg)[0]
            return node(cs, "SamplerCustomAdvanced", node(cs, "RandomNoise", self.seed)[0], guider,
                        node(cs, "KSamplerSelect", "euler")[0], high, latent)[1]
        return self._sample(clip, name, run)

    def _keyframes(self, start, end, frames: int, clip_start, clip_end, anchor=None, position: int = -1):
        from ..nodes.wan import SVDInbetweenWanKeyframes
        x = self.x
        return SVDInbetweenWanKeyframes.execute(x.positive, x.negative, self.vae, start, end, x.width, x.height,
                                                frames, "separate", 1, 1.0, 1.0, 1.0, position, anchor, clip_start,
                                                clip_end).args

    def native(self) -> Clip:
        import nodes
        from comfy_extras import nodes_wan
        x, clip = self.x, Clip()
        with Stopwatch(self.device) as sw:
            pos, neg, latent = nodes_wan.WanFirstLastFrameToVideo.execute(
                x.positive, x.negative, self.vae, x.width, x.height, self.frames["native"], 1, start_image=x.start,
                end_image=x.end, clip_vision_start_image=x.clip_start, clip_vision_end_image=x.clip_end).args
            out = self._ksampler(clip, "native", pos, neg, latent)
            video = node(nodes, "VAEDecode", self.vae, out)[0]
        clip.graph_s, clip.frames = sw.seconds, video.shape[0]
        return clip

    def afb(self, stop: int | None = None) -> Clip:
        """forward, reverse (stopped after `stop` steps when given), anchor, final."""
        from ..nodes.wan import SVDInbetweenWanAnchor, SVDInbetweenWanDecode
        x, f, clip = self.x, self.frames, Clip()

        def decode(latent):
            return SVDInbetweenWanDecode.execute(latent, self.vae).args[0]
        with Stopwatch(self.device) as sw:
            forward = decode(self._ksampler(clip, "forward", *self._keyframes(x.start, x.end, f["forward"],
                                                                              x.clip_start, x.clip_end)))
            rev = self._keyframes(x.end, x.start, f["reverse"], x.clip_end, x.clip_start)
            reverse = decode(self._ksampler(clip, "reverse", *rev) if stop is None
                             else self._stopped(clip, "reverse", *rev, stop))
            anchor, position, _ = SVDInbetweenWanAnchor.execute(forward, reverse, 1, "alex").args
            final = decode(self._ksampler(clip, "final", *self._keyframes(x.start, x.end, f["final"], x.clip_start,
                                                                          x.clip_end, anchor, position)))
        clip.graph_s, clip.frames = sw.seconds, final.shape[0]
        return clip

    def run(self, scheme: str, stop: int) -> Clip:
        return self.native() if scheme == "native" else self.afb(stop if scheme == "afb_stop" else None)


def count_and_time(steps: int = 4, width: int = 64, height: int = 64, repeats: int = 3, seed: int = 0,
                   frames: dict[str, int] | None = None, model=None, vae=None, warmup: bool = True) -> dict:
    """Every scheme's clip `repeats` times (after a warm-up run of each): the counts (of the last run), the median
    seconds, and the formula at `steps` and at the authors' 50."""
    why = host_ok(own_vae=vae is None)
    if why:
        raise WanBenchUnsupported(f"svd-inbetween bench --wan: {why}")
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    stop = stop_step(steps)
    graphs = WanGraphs(model or tiny_wan_patcher(seed), vae or tiny_wan_vae(seed + 2), Inputs.random(width, height,
                       seed + 1), steps, seed=seed, frames=frames)
    out = {"steps": steps, "stop": stop, "cfg": graphs.cfg, "width": width, "height": height,
           "frames": graphs.frames, "repeats": repeats, "formula": formula(steps, stop),
           "formula_authors": formula(AUTHORS_STEPS, AUTHORS_STOP), "schemes": {}}
    with random_lpips_backbone(seed):
        for scheme in SCHEMES if warmup else ():  # lazy initialisation would otherwise land on the first run
            graphs.run(scheme, stop)
        runs = {s: [] for s in SCHEMES}
        for _ in range(max(repeats, 1)):
            for scheme in SCHEMES:  # interleaved, so a busy moment of a shared CPU hits every scheme alike
                runs[scheme].append(graphs.run(scheme, stop))
    for scheme, clips in runs.items():
        last = clips[-1]
        out["schemes"][scheme] = {
            "calls": sum(last.calls.values()), "evaluations": sum(last.evaluations.values()),
            "passes": {p: {"calls": last.calls[p], "evaluations": last.evaluations[p],
                           "sampling_s": median(c.sampling_s[p] for c in clips)} for p in last.calls},
            "sampling_s": median(sum(c.sampling_s.values()) for c in clips),
            "graph_s": median(c.graph_s for c in clips), "frames": last.frames}
    return out


def counts_match(result: dict) -> dict[str, bool]:
    """Counted calls and evaluations (per pass too) equal the formula at the run's steps, per scheme."""
    f = result["formula"]
    return {s: r["calls"] == f[s]["calls"] and r["evaluations"] == f[s]["evaluations"]
            and [p["calls"] for p in r["passes"].values()] == f[s]["passes"] for s, r in result["schemes"].items()}


def _labels(frames: dict[str, int], stop: int) -> dict[str, str]:
    return {"native": f"native FLF ({frames['native']})",
            "afb": f"AFB ({frames['forward']}+{frames['reverse']}+{frames['final']})",
            "afb_stop": f"AFB, reverse K={stop}"}


def format_counts(result: dict, device_text: str) -> list[str]:
    a, s = result["formula_authors"], result["schemes"]
    ok = counts_match(result)
    base = s["native"]
    label = _labels(result["frames"], result["stop"])
    lines = [f"Wan 2.1: Anchor Frame Bridging vs native first-last frame on {device_text}",
             f"  tiny random Wan 2.1 I2V (2 blocks, dim 32) + tiny Wan VAE, {result['width']}x{result['height']}, "
             f"{result['steps']} Euler steps (reverse stopped at K={result['stop']}), cfg {result['cfg']:g}, "
             f"median of {result['repeats']}",
             f"  {'scheme':<22} {'calls':>5} {'evals':>5} {'= formula':>9} {'per pass':>12} {'sampling s':>10} "
             f"{'x native':>8} {'graph s':>8} {'x native':>8} {'frames':>6}"]
    for k, r in s.items():
        per = "+".join(str(p["calls"]) for p in r["passes"].values())
        lines.append(f"  {label[k]:<22} {r['calls']:>5} {r['evaluations']:>5} {('yes' if ok[k] else 'NO'):>9} "
                     f"{per:>12} {r['sampling_s']:>10.3f} {r['sampling_s'] / base['sampling_s']:>8.2f} "
                     f"{r['graph_s']:>8.3f} {r['graph_s'] / base['graph_s']:>8.2f} {r['frames']:>6}")
    lines.append(f"  formula at the authors' {AUTHORS_STEPS} steps, cfg {AUTHORS_CFG:g} (one call per Euler step, "
                 "cond + uncond = 2 evaluations per call):")
    authors = _labels(FRAMES, AUTHORS_STOP)
    for k in SCHEMES:
        passes = " + ".join(f"{n} x 2" for n in a[k]["passes"])
        lines.append(f"  {authors[k]:<22} {a[k]['calls']:>5} {a[k]['evaluations']:>5}   = {passes:<27} x native "
                     f"{a[k]['evaluations'] / a['native']['evaluations']:.2f}")
    lines.append("  (calls = apply_model calls, evals = batch entries in them, counted by a model_function_wrapper; "
                 "sampling s = the KSampler / SamplerCustomAdvanced calls; graph s = the whole graph with keyframe "
                 "encoding, the anchor's LPIPS and the decodes; a tiny model is overhead-bound, so these ratios are "
                 "a CPU's, not a GPU's)")
    return lines
