"""Training checkpoints: the weights in the pack's compact format plus a resume state beside them.

`backward-step001000.safetensors`   W_v'/W_o' (format.save_backward_weights), loadable by
                                     SVDInbetweenLoadBackwardWeights as is
`backward-step001000.train_state`   safetensors data: AdamW moments per tensor; header metadata
                                     holds step, optimizer hyper-parameters and grad-scaler state as JSON
The state file's extension keeps it out of ComfyUI's weight lists. Nothing is unpickled.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .format import BackwardWeightsError, read_backward_weights, resolve, save_backward_weights, write_atomically

log = logging.getLogger(__name__)

STATE_FORMAT = "svd_inbetween.train_state"
STATE_VERSION = "1"
STATE_EXT = ".train_state"


def state_file(weights_file: str) -> str:
    return os.path.splitext(weights_file)[0] + STATE_EXT


def step_file(output: str, step: int) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}-step{step:06d}{ext or '.safetensors'}"


@dataclass
class TrainState:
    step: int
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]   # absolute fp32 W_v', W_o'
    optimizer: dict | None                                  # {"tensors": {...}, "meta": {...}}

    def restore(self, optimizer: torch.optim.Optimizer, scaler, names: list[str]) -> None:
        """Load saved AdamW moments (keyed by tensor name) and scaler state into fresh objects."""
        tensors, meta = self.optimizer["tensors"], self.optimizer["meta"]
        params = optimizer.param_groups[0]["params"]
        state = {}
        for i, (name, p) in enumerate(zip(names, params)):
            entry = {}
            for slot in meta["slots"]:
                t = tensors.get(f"{name}.{slot}")
                if t is None:
                    raise BackwardWeightsError(f"resume state lacks {name}.{slot}; was it written by another "
                                               "version of the trainer?")
                entry[slot] = t if slot == "step" else t.to(p.device)
            state[i] = entry
        # Hyper-parameters given now (--lr ...) win over the saved ones.
        current = {k: v for k, v in optimizer.param_groups[0].items() if k in ("lr", "betas", "weight_decay", "eps")}
        group = dict(meta["param_group"], params=list(range(len(params))), **current)
        optimizer.load_state_dict({"state": state, "param_groups": [group]})
        if meta.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(meta["scaler"])


def save_checkpoint(file: str, weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    base: dict[str, tuple[torch.Tensor, torch.Tensor]], kind: str, metadata: dict, step: int,
                    optimizer: torch.optim.Optimizer, scaler, names: list[str], config) -> list[str]:
    """Write the weights file and its resume state; returns both paths."""
    folder = os.path.dirname(os.path.abspath(file))
    os.makedirs(folder, exist_ok=True)
    fp32 = {p: (v.detach().float().cpu(), o.detach().float().cpu()) for p, (v, o) in weights.items()}
    if kind == "delta":
        fp32 = {p: (v - base[p][0], o - base[p][1]) for p, (v, o) in fp32.items()}
    write_atomically(lambda f: save_backward_weights(f, fp32, kind, metadata), file)

    sd = optimizer.state_dict()
    tensors, slots = {}, set()
    for i, name in enumerate(names):
        for slot, value in sd["state"].get(i, {}).items():
            tensors[f"{name}.{slot}"] = value.detach().cpu().contiguous() if torch.is_tensor(value) \
                else torch.tensor(value)
            slots.add(slot)
    group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
    meta = {"step": step, "names": names, "slots": sorted(slots), "param_group": group,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "config": {k: v for k, v in asdict(config).items() if k != "metadata"}}
    header = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "state": json.dumps(meta, default=str)}
    state_path = state_file(file)
    write_atomically(lambda f: save_file(tensors, f, metadata=header), state_path)
    return [file, state_path]


def load_resume(file: str, base: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> TrainState:
    """Weights (validated against the model) and optimizer state saved by `save_checkpoint`."""
    name = os.path.basename(file)
    tensors, meta = read_backward_weights(file)
    weights = resolve(file, tensors, meta["kind"], base)
    path = state_file(file)
    if not os.path.isfile(path):
        raise BackwardWeightsError(f"--resume {name}: no {os.path.basename(path)} beside it; resume needs the "
                                   "state file the trainer writes with every checkpoint")
    with safe_open(path, framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != STATE_FORMAT or header.get("format_version") != STATE_VERSION:
            raise BackwardWeightsError(f"{os.path.basename(path)}: not a version {STATE_VERSION} training state")
        opt_tensors = {k: f.get_tensor(k) for k in f.keys()}
    state_meta = json.loads(header["state"])
    step = int(state_meta["step"])
    if str(step) != str(meta.get("step", step)):
        raise BackwardWeightsError(f"--resume {name}: weights are from step {meta.get('step')} but "
                                   f"{os.path.basename(path)} from step {step}; they do not belong together")
    log.info("svd-inbetween train: resuming from %s at step %d", name, step)
    return TrainState(step, weights, {"tensors": opt_tensors, "meta": state_meta})
