"""The object patch installed on each temporal attn1 of the SVD UNet."""
from __future__ import annotations

import torch
from torch import nn

from .chunking import in_pieces
from .rotation import apply_probs, attention_probs, rot180
from .run_state import PARTNER, RUN_KEY, InbetweenRun, is_backward


class TemporalAttentionProxy(nn.Module):
    """Stands in for one temporal `CrossAttention` (attn1).

    It registers the original's projections under the original names, so state
    dict keys, weight patches (LoRA) and device moves see the same parameters.
    The original module itself is kept unregistered and is called unchanged
    whenever no inbetween run is active, so stock sampling through a patched
    model is bit-identical.

    Instances are shared between ModelPatcher clones: nothing here changes after
    construction; per-run state lives in the `InbetweenRun`.
    """

    # Marker checked instead of isinstance: ComfyUI may load this package under another
    # module name than tests or the CLI do, giving two copies of this class.
    is_svd_inbetween_proxy = True

    def __init__(self, original: nn.Module, layer: str,
                 backward_v: torch.Tensor | None = None,
                 backward_out: torch.Tensor | None = None):
        super().__init__()
        object.__setattr__(self, "original", original)
        self.layer = layer
        self.heads = original.heads
        self.dim_head = original.dim_head
        self.to_q, self.to_k, self.to_v, self.to_out = original.to_q, original.to_k, original.to_v, original.to_out
        self.backward_to_v = None
        self.backward_to_out = None
        if (backward_v is None) != (backward_out is None):
            raise ValueError(f"{layer}: backward W_v' and W_o' must be given together")
        if backward_v is not None:
            self.backward_to_v = _linear_like(original.to_v, backward_v, bias=None)
            out0 = original.to_out[0]
            self.backward_to_out = _linear_like(out0, backward_out, bias=out0.bias)

    @property
    def has_backward_weights(self) -> bool:
        return self.backward_to_v is not None

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        run: InbetweenRun | None = transformer_options.get(RUN_KEY)
        if run is None or mask is not None or self.layer not in run.rotate_layers:
            return self.original(x, context=context, value=value, mask=mask, transformer_options=transformer_options)
        chunk_ids = transformer_options["cond_or_uncond"]
        if not any(is_backward(c) or run.needs_maps(self.layer, c) for c in chunk_ids):
            return self.original(x, context=context, value=value, mask=mask, transformer_options=transformer_options)
        return self._dual_forward(run, chunk_ids, x, context, value, transformer_options)

    def _dual_forward(self, run: InbetweenRun, chunk_ids, x, context, value, transformer_options):
        rows = x.shape[0] // len(chunk_ids)
        xs = x.split(rows)
        ctx = context.split(rows) if context is not None else xs
        val = value.split(rows) if value is not None else ctx
        outs: list[torch.Tensor | None] = [None] * len(chunk_ids)
        local: dict[int, torch.Tensor] = {}
        # Forward chunks first: their maps feed the backward chunks of this call.
        for i, c in enumerate(chunk_ids):
            if is_backward(c):
                continue
            if not run.needs_maps(self.layer, c):
                outs[i] = self.original(xs[i], context=None if context is None else ctx[i],
                                        value=None if value is None else val[i],
                                        transformer_options=transformer_options)
                continue
            # in_pieces: over (video, position) rows under the lowvram execution, else whole
            probs = in_pieces(lambda q, k: attention_probs(self.to_q(q), self.to_k(k), self.heads), xs[i], ctx[i])
            outs[i] = in_pieces(lambda p, v: self.to_out(apply_probs(p, self.to_v(v))), probs, val[i])
            if PARTNER[c] in chunk_ids:
                local[c] = probs
            else:
                run.store(self.layer, c, probs)
        for i, c in enumerate(chunk_ids):
            if not is_backward(c):
                continue
            partner = PARTNER[c]
            probs = local.pop(partner) if partner in local else run.take(self.layer, partner)
            to_v, to_out = self._backward_projections(x.device) if run.finetuned and self.has_backward_weights \
                else (self.to_v, self.to_out)
            outs[i] = in_pieces(lambda p, v: to_out(apply_probs(rot180(p), to_v(v))), probs, val[i])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _backward_projections(self, device: torch.device):
        """W_v', W_o' on the compute device.

        ComfyUI moves them with the model when it loads this clone, but not when another
        clone of the same model is already loaded (partially_load then returns early);
        layers that ComfyUI casts per call are left to it.
        """
        for lin in (self.backward_to_v, self.backward_to_out):
            if lin.weight.device != device and not getattr(lin, "comfy_cast_weights", False):
                lin.to(device)
        return self.backward_to_v, self.backward_to_out


def _linear_like(template: nn.Module, weight: torch.Tensor, bias) -> nn.Module:
    """A Linear of the template's class (so ComfyUI casts it the same way) holding `weight`."""
    ref = template.weight
    out_features, in_features = weight.shape
    if tuple(ref.shape) != (out_features, in_features):
        raise ValueError(f"backward weight shape {tuple(weight.shape)} does not match {tuple(ref.shape)}")
    lin = type(template)(in_features, out_features, bias=bias is not None, dtype=ref.dtype, device=ref.device)
    lin.weight = nn.Parameter(weight.to(device=ref.device, dtype=ref.dtype), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return lin


def is_proxy(obj) -> bool:
    return getattr(obj, "is_svd_inbetween_proxy", False) is True
