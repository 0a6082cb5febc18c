"""Full-size accounting of SVD-XT inbetweening without weights or a GPU.

The real SVD-XT UNet is built with ComfyUI's classes on the meta device (shapes only,
no memory, no downloads) and run once per question:
- FLOPs of one UNet call of one 25-frame video: torch.utils.flop_counter.FlopCounterMode
  (matmuls, convolutions and attention; element-wise work is not counted);
- the live-tensor peak of one fused evaluation per scheme, traced through that scheme's
  own attention layers (and, for ours, per-video feed-forwards): a dispatch mode adds up
  the bytes of every tensor an op creates and subtracts them when the tensor is freed;
  attention that a scheme does not compute explicitly runs as a flash-style op that never
  holds the N x N scores (what a GPU build runs); allocator fragmentation and kernel
  workspaces are not included;
- the input shape of every temporal attn1, from which the stored-map bytes and the Q/K
  work the one-model design skips follow exactly.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from ..samplers.schedule import fused_evaluations
from .models import ARCH, svd_base_model

H100_BF16_DENSE_FLOPS = 989e12


@dataclass(frozen=True)
class TemporalLayer:
    path: str
    rows: int       # (position) rows per video: latent h*w at this layer's resolution
    channels: int
    heads: int


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensors created by ops inside the mode and still referenced (per storage)."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self.ops = 0  # aten ops dispatched: the kernel launches of a GPU run, give or take fusions
        self._storages: dict[int, list[int]] = {}
        self._tracked: set[int] = set()

    def _release(self, key: int, tensor_id: int) -> None:
        self._tracked.discard(tensor_id)
        entry = self._storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(t) in self._tracked:
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key not in self._storages:
                self._storages[key] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self._storages[key][1] += 1
            self._tracked.add(id(t))
            weakref.finalize(t, self._release, key, id(t))
        return out


def map_bytes(rows: int, heads: int, frames: int, element_size: int) -> int:
    """Bytes of one layer's attention maps for `rows` (video, position) rows."""
    return rows * heads * frames * frames * element_size


def _flash_like(func, q, k, v, heads, *args, **kwargs):
    """Attention output without materialising scores (memory of a fused kernel)."""
    return torch.empty(q.shape[0], q.shape[1], v.shape[-1], device=q.device, dtype=q.dtype)


def _sdpa(func, *args, **kwargs):
    """Force ComfyUI's PyTorch-SDPA attention, whose work the flop counter sees on the meta device."""
    import comfy.ldm.modules.attention
    return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)


def _unet_inputs(arch: str, videos: int, frames: int, height: int, width: int, dtype):
    n = videos * frames
    meta = dict(device="meta", dtype=dtype)
    return (torch.empty(n, 8, height // 8, width // 8, **meta), torch.empty(n, device="meta"),
            dict(context=torch.empty(n, 1, ARCH[arch].context_dim, **meta), y=torch.empty(n, 768, **meta),
                 num_video_frames=frames))


def _temporal_paths(unet) -> list[str]:
    from ..attention_patch.layers import TEMPORAL_ATTN1
    return [name for name, _ in unet.named_modules() if TEMPORAL_ATTN1.match(name)]


@torch.no_grad()
def count_flops(unet, arch: str, frames: int, height: int, width: int, dtype=torch.float16):
    """(FLOPs of one UNet call of one video, the temporal attn1 layers' shapes)."""
    x, t, kw = _unet_inputs(arch, 1, frames, height, width, dtype)
    layers: list[TemporalLayer] = []
    handles = []
    for path in _temporal_paths(unet):
        mod = unet.get_submodule(path)

        def probe(module, args, path=path):
            rows, _, channels = args[0].shape
            layers.append(TemporalLayer(path, rows, channels, module.heads))
        handles.append(mod.register_forward_pre_hook(probe))
    try:
        with FlopCounterMode(display=False) as counter:
            unet(x, t, transformer_options={"optimized_attention_override": _sdpa}, **kw)
    finally:
        for h in handles:
            h.remove()
    return counter.get_total_flops(), layers


@contextlib.contextmanager
def _swapped(unet, modules: dict[str, torch.nn.Module]):
    """Put `modules` at their paths in `unet` for the block, then restore the originals."""
    import comfy.utils
    saved = {}
    try:
        for path, mod in modules.items():
            saved[path] = comfy.utils.set_attr(unet, path, mod)
        yield
    finally:
        for path, mod in saved.items():
            comfy.utils.set_attr(unet, path, mod)


def _call(unet, arch, chunk_ids, frames, height, width, dtype, extra_options=None):
    x, t, kw = _unet_inputs(arch, len(chunk_ids), frames, height, width, dtype)
    opts = {"optimized_attention_override": _flash_like, "cond_or_uncond": list(chunk_ids), **(extra_options or {})}
    out = unet(x, t, transformer_options=opts, **kw)
    del out


OURS = ("sequential", "batched", "lowvram")


@contextlib.contextmanager
def inbetween_patches(unet):
    """The pack's patches on a bare UNet for the block: temporal attn1 proxies (with W_v'/W_o'),
    per-video feed-forwards and frame-chunked spatial res-block layers, as `with_proxies` installs."""
    from ..attention_patch.chunking import FrameChunked, spatial_resblock_layer_paths
    from ..attention_patch.feedforward import PerVideoFeedForward, feedforward_paths
    from ..attention_patch.proxy import TemporalAttentionProxy

    originals = {p: unet.get_submodule(p) for p in _temporal_paths(unet)}
    patches = {p: TemporalAttentionProxy(m, p, torch.empty_like(m.to_v.weight), torch.empty_like(m.to_out[0].weight))
               for p, m in originals.items()}
    patches.update({p: PerVideoFeedForward(unet.get_submodule(p)) for p in feedforward_paths(unet)})
    patches.update({p: FrameChunked(unet.get_submodule(p)) for p in spatial_resblock_layer_paths(unet)})
    with _swapped(unet, patches):
        yield frozenset(originals)


def trace_execution(unet, arch: str, execution: str, frames: int, height: int, width: int, dtype=torch.float16,
                    rotate: frozenset[str] | None = None, piece_bytes: int | None = None, flops: bool = False,
                    present: tuple[int, ...] = (0, 1, 2, 3)) -> dict:
    """One fused evaluation (CFG, both directions; `present`: the chunks, default all four) laid out as
    `execution` lays it out, through the pack's own patches (`inbetween_patches` must be active;
    `rotate`: its layers, default all).
    Returns {"peak": live-tensor bytes, "maps": map bytes held at most, "calls": UNet calls, "ops": aten ops},
    and with `flops` the matmul/convolution FLOPs of the evaluation (flash-style attention not counted)."""
    from ..attention_patch.chunking import low_memory
    from ..attention_patch.feedforward import per_video_feedforward
    from ..attention_patch.run_state import RUN_KEY, InbetweenRun
    from ..samplers.execution import call_groups

    present = sorted(present)
    run = InbetweenRun(rotate_layers=frozenset(_temporal_paths(unet)) if rotate is None else rotate,
                       finetuned=True, active=frozenset(present))
    groups = call_groups(execution, present)
    counter = FlopCounterMode(display=False) if flops else contextlib.nullcontext()
    with torch.no_grad(), LiveBytes() as live, counter:
        for ids in groups:
            chunked = low_memory(piece_bytes) if execution == "lowvram" else contextlib.nullcontext()
            with per_video_feedforward(len(ids)), chunked:
                _call(unet, arch, ids, frames, height, width, dtype, {RUN_KEY: run})
    if run.maps:
        raise RuntimeError(f"accounting: {execution} left {len(run.maps)} maps unused")
    out = {"peak": live.peak, "maps": run.peak_map_bytes, "calls": len(groups), "ops": live.ops}
    if flops:
        out["flops"] = counter.get_total_flops()
    return out


@torch.no_grad()
def scheme_peaks(unet, arch: str, frames: int, height: int, width: int, dtype=torch.float16) -> dict[str, dict]:
    """Live-tensor peak of one fused evaluation (all 16 layers rotating, CFG), per scheme, traced
    through each scheme's own code on the meta device; weights excluded, held maps included.

    reference: bench/reference.py's layers, a forward call of a CFG pair storing every map,
        then the backward call (its own Q/K computed and dropped) while the maps are held;
    sequential, batched, lowvram: the pack's proxies, per-video feed-forwards and chunking
        wrappers, calls laid out by samplers.execution.call_groups (see `trace_execution`).
    Returns {scheme: {"peak": bytes, "maps": bytes of maps held at most, "calls", "ops"}}.
    """
    from .reference import MapStore, RotatedMaps, StoreMaps

    paths = _temporal_paths(unet)
    originals = {p: unet.get_submodule(p) for p in paths}
    out: dict[str, dict] = {}

    store = MapStore()
    store.armed = True
    with LiveBytes() as live:
        with _swapped(unet, {p: StoreMaps(m, p, store) for p, m in originals.items()}):
            _call(unet, arch, [0, 1], frames, height, width, dtype)
        with _swapped(unet, {p: RotatedMaps(m, p, store) for p, m in originals.items()}):
            _call(unet, arch, [0, 1], frames, height, width, dtype)
    out["reference"] = {"peak": live.peak, "maps": store.peak_bytes, "calls": 2, "ops": live.ops}
    with inbetween_patches(unet):
        for scheme in OURS:
            out[scheme] = trace_execution(unet, arch, scheme, frames, height, width, dtype)
    return out


def temporal_attn1_flops(layer: TemporalLayer, frames: int) -> dict[str, int]:
    """Matmul FLOPs of one temporal attn1 for one video, split by what the backward pass needs."""
    r, t, c = layer.rows, frames, layer.channels
    proj = 2 * r * t * c * c
    return {"q_k": 2 * proj, "scores": 2 * r * t * t * c, "v_out": 2 * proj, "probs_v": 2 * r * t * t * c}


def accounting(arch: str = "full", width: int = 1024, height: int = 576, frames: int = 25, steps: int = 50,
               recurrence: int = 5, recurrence_ratio: float = 0.5, peak_flops: float = H100_BF16_DENSE_FLOPS,
               dtype: torch.dtype = torch.float16) -> dict:
    """FLOPs, physical floor and memory budget of one GI clip, per scheme (gi mode: all 16 layers rotate)."""
    base = svd_base_model(arch, dtype, "meta")
    unet = base.diffusion_model
    element = torch.finfo(dtype).bits // 8
    params = sum(p.numel() for p in unet.parameters())
    flops_video, layers = count_flops(unet, arch, frames, height, width, dtype)
    fused = fused_evaluations(steps, recurrence, recurrence_ratio)
    skipped = sum(f["q_k"] + f["scores"] for f in (temporal_attn1_flops(l, frames) for l in layers))
    w_prime = sum(2 * l.channels * l.channels for l in layers) * element
    layer_maps = [map_bytes(l.rows, l.heads, frames, element) for l in layers]  # one video each
    maps_call = 2 * sum(layer_maps)  # a CFG pair: uncond + cond
    largest_layer_maps = 2 * max(layer_maps)
    peaks = scheme_peaks(unet, arch, frames, height, width, dtype)
    weights = params * element
    flops = {"reference": fused * 4 * flops_video, **{s: fused * (4 * flops_video - 2 * skipped) for s in OURS}}
    weights_of = {"reference": 2 * weights, **{s: weights + w_prime for s in OURS}}
    memory = {s: {"weights": weights_of[s], "maps": peaks[s]["maps"], "call_peak": peaks[s]["peak"],
                  "total": weights_of[s] + peaks[s]["peak"]} for s in weights_of}
    return {
        "arch": arch, "width": width, "height": height, "frames": frames, "dtype": str(dtype).replace("torch.", ""),
        "steps": steps, "recurrence": recurrence, "recurrence_ratio": recurrence_ratio,
        "unet_params": params, "flops_per_video_call": flops_video, "fused_evaluations": fused,
        "videos_per_fused_evaluation": 4, "qk_flops_skipped_per_backward_video": skipped,
        "peak_flops": peak_flops, "flops": flops,
        "floor_s": {k: v / peak_flops for k, v in flops.items()},
        "unet_calls": {s: peaks[s]["calls"] * fused for s in peaks},
        "maps_per_unet_call": maps_call, "largest_layer_maps": largest_layer_maps,
        "temporal_layers": [l.__dict__ for l in layers], "memory": memory,
    }


def format_accounting(a: dict) -> list[str]:
    gib = 2 ** 30
    dt = a["dtype"]
    lines = [
        f"Full-size accounting: SVD-XT UNet ({a['unet_params'] / 1e9:.3f} B params) at {a['width']}x{a['height']}x"
        f"{a['frames']}, {dt}, meta device (no weights, no GPU)",
        f"  FLOPs per UNet call of one video (FlopCounterMode): {a['flops_per_video_call'] / 1e12:.2f} TFLOP",
        f"  GI clip: {a['steps']} steps + {(a['fused_evaluations'] - a['steps']) // max(a['recurrence'], 1)} x "
        f"{a['recurrence']} recurrence = "
        f"{a['fused_evaluations']} fused evaluations x {a['videos_per_fused_evaluation']} videos "
        f"(2 directions x CFG 2)",
        f"  Q/K work the one-model backward pass skips: {a['qk_flops_skipped_per_backward_video'] / 1e12:.3f} TFLOP per "
        f"backward video ({100 * a['qk_flops_skipped_per_backward_video'] / a['flops_per_video_call']:.1f}% of a call)",
        f"  maps stored per UNet call (16 layers, CFG pair, {dt}): {a['maps_per_unet_call'] / gib:.3f} GiB; "
        f"largest single layer: {a['largest_layer_maps'] / 2 ** 20:.0f} MiB",
        f"  {'scheme':<11} {'UNet calls':>10} {'PFLOP':>8} {'H100 floor s':>12} {'weights':>9} {'maps held':>9} "
        f"{'call peak':>9} {'total GiB':>9}",
    ]
    for s in a["memory"]:
        m = a["memory"][s]
        lines.append(f"  {s:<11} {a['unet_calls'][s]:>10} {a['flops'][s] / 1e15:>8.2f} {a['floor_s'][s]:>12.1f} "
                     f"{m['weights'] / gib:>9.2f} {m['maps'] / gib:>9.2f} {m['call_peak'] / gib:>9.2f} "
                     f"{m['total'] / gib:>9.2f}")
    lines.append(f"  floor = FLOPs / {a['peak_flops'] / 1e12:.0f} TFLOP/s (H100 SXM bf16 dense peak); call peak = "
                 "live-tensor peak of one fused evaluation traced through the scheme's own code (its attention "
                 "layers, stored maps included; ours: per-video feed-forwards, lowvram's pieces), flash-style spatial "
                 "attention, no allocator overhead or kernel workspace; total = weights + call peak")
    return lines
