"""Backward-motion fine-tuning (paper Sec. 4.2, Algorithm 1) on ComfyUI's own SVD model.

One base model is in memory. A clone carries the inference proxies (attention_patch/)
whose backward W_v'/W_o' are the only trainable tensors (32, fp32 masters). Each sample:
    z = VAE latents of a clip, sigma ~ lognormal(p_mean, p_std), z_t = z + sigma * eps
    frozen forward pass (no grad) on z_t, conditioned on the FIRST frame: chunk FORWARD_COND
        -> the proxies capture the temporal attention maps A of all 16 layers
    backward pass (grad) on flip(z_t), conditioned on the LAST frame: chunk BACKWARD_COND
        -> the proxies use rot180(A) and W_v'/W_o', exactly as when sampling
    loss = (sigma^2 + 1) / sigma^2 * mean((denoised - flip(z))^2)   (EDM x0 weighting,
           equal to the v-prediction MSE for SVD's sigma_data = 1)
Clean latents are ComfyUI's VAE encoding (the posterior mode; the authors draw a sample,
which differs by the VAE's tiny posterior std).
Distributed: torchrun + torch.distributed DDP over the 32 tensors (gloo on CPU).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ..attention_patch.layers import proxies, temporal_attn1_paths, with_proxies
from ..attention_patch.rotation import flip_frames
from ..attention_patch.run_state import BACKWARD_COND, FORWARD_COND, RUN_KEY, InbetweenRun
from ..conditioning.keyframes import augment
from .apply import model_base_weights
from .format import KINDS
from .train_data import StepSampler, sample_seed
from .train_state import TrainState, load_resume, save_checkpoint, step_file

log = logging.getLogger(__name__)


class TrainConfigError(ValueError):
    """A training option that cannot work; the message names the option and the fix."""


@dataclass
class TrainConfig:
    steps: int = 15000
    batch_size: int = 4            # samples per optimizer step, over all processes (the paper: 4)
    micro_batch_size: int = 1      # samples per forward pass on one process
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    grad_clip: float = 1.0
    p_mean: float = 0.7
    p_std: float = 1.6
    fps: int = 7                   # UNet gets fps - 1 = 6, as the authors' training
    motion_bucket_id: int = 127
    augmentation: float = 0.02
    gradient_checkpointing: bool = False
    output: str = "backward.safetensors"
    save_every: int = 1000
    resume: str | None = None
    kind: str = "absolute"
    seed: int = 42
    num_workers: int = 2
    progress: bool = True
    metadata: dict = field(default_factory=dict)

    def accumulation(self, world_size: int) -> int:
        per_rank, rem = divmod(self.batch_size, world_size)
        if rem or per_rank % self.micro_batch_size:
            raise TrainConfigError(
                f"--batch-size {self.batch_size} must be a multiple of processes ({world_size}) x "
                f"--micro-batch-size ({self.micro_batch_size})")
        return per_rank // self.micro_batch_size


@dataclass
class TrainResult:
    step: int
    losses: list[float]
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    files: list[str]


class _TrainingRun(InbetweenRun):
    """Maps stay until the step ends: gradient checkpointing recomputes the backward
    pass and reads them again."""

    def take(self, layer: str, cond_index: int) -> torch.Tensor:
        try:
            return self.maps[(layer, cond_index)]
        except KeyError:
            return super().take(layer, cond_index)


def trainable_clone(model_patcher, init: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """A clone whose proxies hold fp32, grad-enabled W_v'/W_o'; returns (clone, [32 params], names).

    The Linears cast their weight to the activation dtype on each call
    (comfy_cast_weights), so fp16/bf16 base models train fp32 masters.
    """
    m = with_proxies(model_patcher, init)
    params, names = [], []
    for path, proxy in proxies(m).items():
        for tag, lin, weight in (("to_v", proxy.backward_to_v, init[path][0]),
                                 ("to_out.0", proxy.backward_to_out, init[path][1])):
            lin.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=True)
            lin.comfy_cast_weights = True
            params.append(lin.weight)
            names.append(f"{path}.{tag}")
    return m, params, names


def _checkpointed(fn):
    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        # Recomputation happens after the UNet has moved on: give it its own copy of option dicts.
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return forward


@contextlib.contextmanager
def gradient_checkpointing(unet: nn.Module):
    """Recompute each res-block and transformer of the UNet in the backward pass.

    ComfyUI's UNet has no checkpointing switch and dispatches its layers with
    isinstance, so wrappers cannot replace them; the trainer overrides `forward` on
    the instances of the model it owns for the duration of training, then restores it.
    """
    from comfy.ldm.modules.attention import SpatialVideoTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import VideoResBlock
    layers = [layer for block in (*unet.input_blocks, unet.middle_block, *unet.output_blocks) for layer in block
              if isinstance(layer, (VideoResBlock, SpatialVideoTransformer))]
    for layer in layers:
        layer.forward = _checkpointed(layer.forward)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward


@contextlib.contextmanager
def frozen_except(module: nn.Module, trainable: list[nn.Parameter]):
    """requires_grad off for every parameter but `trainable` (ComfyUI leaves it on, since it
    only ever runs under no_grad), restored afterwards; values are never touched."""
    keep = {id(p) for p in trainable}
    flipped = [p for p in module.parameters() if p.requires_grad and id(p) not in keep]
    for p in flipped:
        p.requires_grad_(False)
    try:
        yield len(flipped)
    finally:
        for p in flipped:
            p.requires_grad_(True)


def _load(model_patcher) -> None:
    import comfy.model_management
    comfy.model_management.load_models_gpu([model_patcher], force_full_load=True)


def _unload(model_patcher) -> None:
    import comfy.model_management
    loaded = comfy.model_management.current_loaded_models
    for i in range(len(loaded) - 1, -1, -1):
        if loaded[i].model is model_patcher:
            loaded.pop(i).model_unload()


def compute_dtype(model_patcher) -> torch.dtype:
    base = model_patcher.model
    return base.manual_cast_dtype or base.get_dtype()


@torch.no_grad()
def encode_batch(model_patcher, clip_vision, vae, pixels: torch.Tensor, sample_ids, cfg: TrainConfig) -> dict:
    """CLIP/VAE conditioning, clean latents, sigma and noise of a micro-batch [B, T, H, W, 3].

    Noise comes from (seed, sample id) only. One augmentation noise per sample is
    shared by its first and last frame, as in the authors' training.
    """
    base = model_patcher.model
    b, t = pixels.shape[:2]
    gens = [torch.Generator().manual_seed(sample_seed(cfg.seed, int(i), 1)) for i in sample_ids]
    sigma = torch.stack([(cfg.p_mean + cfg.p_std * torch.randn((), generator=g)).exp() for g in gens])
    aug = torch.stack([torch.randn(pixels.shape[2:], generator=g) for g in gens])
    ends = torch.cat([pixels[:, 0], pixels[:, -1]])
    embeds = clip_vision.encode_image(ends).image_embeds.float().cpu()
    ends_latent = vae.encode(augment(ends, cfg.augmentation, aug.repeat(2, 1, 1, 1))).float().cpu()
    z = base.process_latent_in(vae.encode(pixels.flatten(0, 1)).float().cpu())
    eps = torch.cat([torch.randn((t, *z.shape[1:]), generator=g) for g in gens])
    adm = base.encode_adm(fps=cfg.fps, motion_bucket_id=cfg.motion_bucket_id,
                          augmentation_level=cfg.augmentation).float().cpu()
    per_frame = lambda x: x.repeat_interleave(t, dim=0)  # noqa: E731
    return {"frames": t, "sigma": sigma, "z": z, "eps": eps, "y": adm.expand(b * t, -1),
            "first": (per_frame(ends_latent[:b]), per_frame(embeds[:b, None])),
            "last": (per_frame(ends_latent[b:]), per_frame(embeds[b:, None]))}


def _apply(model_patcher, x, sigma, cond, y, frames, chunk, run):
    concat, context = cond
    topts = {RUN_KEY: run, "cond_or_uncond": [chunk], "sigmas": sigma}
    return model_patcher.model.apply_model(x, sigma, c_concat=concat, c_crossattn=context, y=y,
                                           num_video_frames=frames, transformer_options=topts)


def sample_losses(model_patcher, enc: dict, paths: list[str]) -> torch.Tensor:
    """Per-sample EDM-weighted loss of the backward model (gradients reach the proxies' W_v'/W_o')."""
    device = model_patcher.load_device
    t = enc["frames"]
    sigma = enc["sigma"].to(device)
    sigma_f = sigma.repeat_interleave(t)
    z = enc["z"].to(device)
    z_t = z + enc["eps"].to(device) * sigma_f[:, None, None, None]
    # Not cleared here: with gradient checkpointing the backward pass reads the maps again
    # (the checkpoints keep this run alive until the graph is freed).
    run = _TrainingRun(rotate_layers=frozenset(paths), finetuned=True, active=frozenset({FORWARD_COND, BACKWARD_COND}))
    with torch.no_grad():
        _apply(model_patcher, z_t, sigma_f, enc["first"], enc["y"], t, FORWARD_COND, run)
    denoised = _apply(model_patcher, flip_frames(z_t, t), sigma_f, enc["last"], enc["y"], t, BACKWARD_COND, run)
    err = (denoised.float() - flip_frames(z, t)).square().reshape(sigma.shape[0], -1).mean(1)
    return err * (sigma.square() + 1) / sigma.square()


@torch.no_grad()
def evaluate(model_patcher, clip_vision, vae, pixels: torch.Tensor, sample_ids, cfg: TrainConfig) -> float:
    """Mean loss of a model carrying backward weights on a fixed batch (fixed noise from the ids)."""
    enc = encode_batch(model_patcher, clip_vision, vae, pixels, sample_ids, cfg)
    _load(model_patcher)
    return sample_losses(model_patcher, enc, temporal_attn1_paths(model_patcher)).mean().item()


class _Objective(nn.Module):
    """Holds the 32 trainable tensors so DDP can all-reduce their gradients; forward = micro-batch loss."""

    def __init__(self, params: list[nn.Parameter], loss_fn):
        super().__init__()
        self.params = nn.ParameterList(params)
        object.__setattr__(self, "loss_fn", loss_fn)

    def forward(self, pixels, sample_ids):
        return self.loss_fn(pixels, sample_ids)


def _dist() -> tuple[bool, int, int]:
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def train(model_patcher, clip_vision, vae, dataset, config: TrainConfig) -> TrainResult:
    """Fine-tune the backward W_v'/W_o' of `model_patcher` (a ComfyUI SVD ModelPatcher) on `dataset`
    (a train_data.ClipDataset or anything mapping a sample id to {"id", "pixels"}).

    The caller's model is left untouched; checkpoints and the final file are written on rank 0.
    """
    distributed, rank, world = _dist()
    accum = config.accumulation(world)
    if config.kind not in KINDS:
        raise TrainConfigError(f"--kind must be 'absolute' or 'delta', got {config.kind!r}")
    paths = temporal_attn1_paths(model_patcher)
    base = {p: (v.detach().float().cpu(), o.detach().float().cpu()) for p, (v, o) in
            model_base_weights(model_patcher).items()}
    state = load_resume(config.resume, base) if config.resume else TrainState(0, base, None)
    m, params, names = trainable_clone(model_patcher, state.weights)
    try:
        _load(m)
        ckpt = gradient_checkpointing(m.model.diffusion_model) if config.gradient_checkpointing \
            else contextlib.nullcontext()
        with frozen_except(m.model, params), ckpt:
            return _loop(_Run(m, params, names, paths, base, clip_vision, vae, dataset, config,
                              distributed, rank, world, accum), state)
    finally:
        _unload(m)


@dataclass
class _Run:
    """What one training run holds fixed from its first step to its last (as GenerationSettings for a sampler):
    the trainable clone and its 32 tensors, the frozen base, the encoders, the data, the config and the
    process group. The loop's changing state (optimizer, step, losses) lives in _loop."""
    m: object  # the trainable ModelPatcher clone
    params: list  # the 32 trainable tensors, (W_v', W_o') per layer in `paths` order
    names: list[str]  # optimizer parameter names (resume checks them)
    paths: list[str]  # the 16 temporal attn1 module paths
    base: dict  # path -> (W_v, W_o) of the base model, fp32 on the CPU
    clip_vision: object
    vae: object
    dataset: object
    config: TrainConfig
    distributed: bool
    rank: int
    world: int
    accum: int  # micro-batches per optimizer step on this rank


def _loop(run: _Run, state: TrainState) -> TrainResult:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    m, params, names, paths, config = run.m, run.params, run.names, run.paths, run.config
    distributed, rank, world, accum = run.distributed, run.rank, run.world, run.accum
    device = m.load_device
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                  eps=config.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=compute_dtype(m) == torch.float16)
    if state.optimizer is not None:
        state.restore(optimizer, scaler, names)

    def micro_loss(pixels, sample_ids):
        enc = encode_batch(m, run.clip_vision, run.vae, pixels, sample_ids, config)
        _load(m)  # encoding may have made ComfyUI offload the UNet
        return sample_losses(m, enc, paths).mean()

    objective = _Objective(params, micro_loss)
    if distributed:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    loader = DataLoader(run.dataset, batch_size=config.micro_batch_size, num_workers=config.num_workers,
                        sampler=StepSampler(state.step, config.steps, config.batch_size, rank, world),
                        pin_memory=device.type == "cuda")
    batches = iter(loader)
    save = lambda file, step, shape: _save(run, file, step, optimizer, scaler, shape)  # noqa: E731
    losses, files, ema, shape = [], [], None, None
    done = state.step
    with tqdm(total=config.steps, initial=state.step, disable=not (config.progress and rank == 0),
              desc="svd-inbetween train", unit="step", dynamic_ncols=True) as bar:
        for step in range(state.step, config.steps):
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            for k in range(accum):
                batch = next(batches)
                shape = tuple(batch["pixels"].shape[1:4])  # (frames, height, width), recorded in the files
                last = not distributed or k == accum - 1
                with contextlib.nullcontext() if last else objective.no_sync():
                    loss = objective(batch["pixels"], batch["id"].tolist()) / accum
                    scaler.scale(loss).backward()
                total += loss.detach()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)  # skipped by the fp16 scaler when gradients overflowed
            scaler.update()
            if distributed:
                dist.all_reduce(total)
                total /= world
            value = total.item()
            if not math.isfinite(value):
                log.warning("svd-inbetween train: non-finite loss at step %d", step + 1)
            losses.append(value)
            ema = value if ema is None else 0.98 * ema + 0.02 * value
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", avg=f"{ema:.4f}", grad=f"{float(grad_norm):.3g}")
            done = step + 1
            if config.save_every and done % config.save_every == 0 and done < config.steps:
                files += save(step_file(config.output, done), done, shape)
    files += save(config.output, done, shape)
    weights = {p: (params[2 * i].detach().float().cpu().clone(), params[2 * i + 1].detach().float().cpu().clone())
               for i, p in enumerate(paths)}
    return TrainResult(done, losses, weights, files)


def _save(run: _Run, file, step, optimizer, scaler, shape) -> list[str]:
    params, paths, config = run.params, run.paths, run.config
    written = []
    if run.rank == 0:
        weights = {p: (params[2 * i], params[2 * i + 1]) for i, p in enumerate(paths)}
        meta = {"source": "svd-inbetween train", "step": step, "batch_size": config.batch_size, "lr": config.lr,
                "seed": config.seed, **config.metadata}
        if shape is not None:
            meta.update(frames=shape[0], height=shape[1], width=shape[2])
        written = save_checkpoint(file, weights, run.base, config.kind, meta, step, optimizer, scaler, run.names,
                                  config)
        log.info("svd-inbetween train: step %d saved to %s", step, file)
    if run.distributed:
        dist.barrier()
    return written
