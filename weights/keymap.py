"""Where the 16 temporal self-attentions of the SVD UNet live, in diffusers and in ComfyUI.

Both libraries build the same UNet; only the names differ. The mapping is derived
from the block structure rather than typed in:

  down path: ComfyUI's `input_blocks` is one flat list: [conv_in], then per level
      one entry per res block (+ its transformer) and, except after the last level,
      one downsampler. diffusers nests the same as down_blocks[level].attentions[i].
  middle:    middle_block = [res, transformer, res]; diffusers mid_block.attentions[0].
  up path:   output_blocks is flat again, each level (deepest first) has
      num_res_blocks + 1 entries; diffusers up_blocks[level].attentions[i].

Inside a transformer, the temporal block is `time_stack.0` in ComfyUI and
`temporal_transformer_blocks.0` in diffusers; the official fine-tune trained only
`.attn1.to_v.weight` and `.attn1.to_out.0.weight` of block 0.
"""
from __future__ import annotations

from dataclasses import dataclass

COMFY_TEMPORAL = "time_stack.0.attn1"
DIFFUSERS_TEMPORAL = "temporal_transformer_blocks.0.attn1"
SUFFIX_V = "to_v.weight"
SUFFIX_OUT = "to_out.0.weight"
SUFFIXES = (SUFFIX_V, SUFFIX_OUT)

# The SVD img2vid / img2vid-xt UNet (identical architecture; only num_frames differs).
SVD_MODEL_CHANNELS = 320
SVD_CHANNEL_MULT = (1, 2, 4, 4)
SVD_NUM_RES_BLOCKS = (2, 2, 2, 2)
SVD_ATTENTION_LEVELS = (True, True, True, False)


@dataclass(frozen=True)
class Layer:
    """One temporal attn1: its ComfyUI module path, its diffusers module path, its width."""
    comfy: str
    diffusers: str
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of both to_v.weight and to_out.0.weight (inner dim == channels in SVD)."""
        return (self.width, self.width)


def derive_layers(widths: list[int], num_res_blocks: list[int], input_depth: list[int],
                  output_depth: list[int], middle_depth: int) -> list[Layer]:
    """The temporal attn1 layers of a UNet, in ComfyUI module order (input, middle, output).

    widths[level]: channels of each level. input_depth: transformer depth of each
    input res block, in order. output_depth: transformer depth of each output block,
    in output-block order. middle_depth: depth of the middle transformer.
    """
    levels = len(widths)
    if len(num_res_blocks) != levels:
        raise ValueError(f"num_res_blocks has {len(num_res_blocks)} levels, widths has {levels}")
    if len(input_depth) != sum(num_res_blocks) or len(output_depth) != sum(n + 1 for n in num_res_blocks):
        raise ValueError("transformer depth lists do not match the number of res blocks")
    layers = []
    block, k = 1, 0  # input_blocks[0] is conv_in
    for level in range(levels):
        for i in range(num_res_blocks[level]):
            if input_depth[k] > 0:
                layers.append(Layer(f"input_blocks.{block}.1.{COMFY_TEMPORAL}",
                                    f"down_blocks.{level}.attentions.{i}.{DIFFUSERS_TEMPORAL}", widths[level]))
            block, k = block + 1, k + 1
        if level < levels - 1:
            block += 1  # downsampler
    if middle_depth > 0:
        layers.append(Layer(f"middle_block.1.{COMFY_TEMPORAL}", f"mid_block.attentions.0.{DIFFUSERS_TEMPORAL}",
                            widths[-1]))
    block = 0
    for up in range(levels):
        level = levels - 1 - up
        for i in range(num_res_blocks[level] + 1):
            if output_depth[block] > 0:
                layers.append(Layer(f"output_blocks.{block}.1.{COMFY_TEMPORAL}",
                                    f"up_blocks.{up}.attentions.{i}.{DIFFUSERS_TEMPORAL}", widths[level]))
            block += 1
    return layers


def layers_from_comfy_config(unet_config: dict) -> list[Layer]:
    """From ComfyUI's unet_config (model_patcher.model.model_config.unet_config)."""
    nrb = unet_config["num_res_blocks"]
    mult = list(unet_config["channel_mult"])
    nrb = list(nrb) if isinstance(nrb, (list, tuple)) else [nrb] * len(mult)
    depth = unet_config.get("transformer_depth", 1)
    depth = list(depth) if isinstance(depth, (list, tuple)) else [depth] * sum(nrb)
    # ComfyUI builds output blocks by popping transformer_depth_output from its end.
    out_depth = list(reversed(unet_config["transformer_depth_output"]))
    middle = unet_config.get("transformer_depth_middle")
    middle = depth[-1] if middle is None else middle
    widths = [unet_config["model_channels"] * m for m in mult]
    return derive_layers(widths, nrb, depth, out_depth, middle)


def layers_from_diffusers_config(config: dict) -> list[Layer]:
    """From a diffusers UNetSpatioTemporalConditionModel config.json."""
    widths = list(config["block_out_channels"])
    lpb = config.get("layers_per_block", 2)
    nrb = list(lpb) if isinstance(lpb, (list, tuple)) else [lpb] * len(widths)
    down = [("CrossAttn" in t) for t in config["down_block_types"]]
    up = [("CrossAttn" in t) for t in config["up_block_types"]]
    if len(down) != len(widths) or len(up) != len(widths):
        raise ValueError("down/up block types do not match block_out_channels")
    input_depth = [int(down[level]) for level in range(len(widths)) for _ in range(nrb[level])]
    output_depth = [int(up[u]) for u in range(len(widths)) for _ in range(nrb[len(widths) - 1 - u] + 1)]
    return derive_layers(widths, nrb, input_depth, output_depth, 1)


def svd_layers(model_channels: int = SVD_MODEL_CHANNELS) -> list[Layer]:
    """The SVD UNet's 16 layers at a given base width (320 for the released models)."""
    widths = [model_channels * m for m in SVD_CHANNEL_MULT]
    nrb = list(SVD_NUM_RES_BLOCKS)
    input_depth = [int(SVD_ATTENTION_LEVELS[lv]) for lv in range(len(nrb)) for _ in range(nrb[lv])]
    output_depth = [int(SVD_ATTENTION_LEVELS[len(nrb) - 1 - u]) for u in range(len(nrb))
                    for _ in range(nrb[len(nrb) - 1 - u] + 1)]
    return derive_layers(widths, nrb, input_depth, output_depth, 1)


# Key schemes: how a file names the tensor `suffix` of layer `layer`.
SCHEMES = {
    "diffusers": lambda layer, suffix: f"{layer.diffusers}.{suffix}",
    "comfyui_checkpoint": lambda layer, suffix: f"model.diffusion_model.{layer.comfy}.{suffix}",
    "comfyui_unet": lambda layer, suffix: f"{layer.comfy}.{suffix}",
    "svd_inbetween": lambda layer, suffix: f"diffusion_model.{layer.comfy}.{suffix}",
}
SCHEME_HELP = {
    "diffusers": "diffusers UNet (the official release, unet/diffusion_pytorch_model.safetensors)",
    "comfyui_checkpoint": "ComfyUI/SGM single-file checkpoint (svd.safetensors, svd_xt.safetensors)",
    "comfyui_unet": "bare UNet state dict (models/unet)",
    "svd_inbetween": "this pack's compact backward-weights file",
}


def file_key(scheme: str, layer: Layer, suffix: str) -> str:
    return SCHEMES[scheme](layer, suffix)


def detect_scheme(keys, layers: list[Layer]) -> tuple[str | None, int]:
    """The scheme under which most of the layers' tensors are present, and how many are."""
    keys = set(keys)
    best, best_n = None, 0
    for scheme in SCHEMES:
        n = sum(file_key(scheme, layer, s) in keys for layer in layers for s in SUFFIXES)
        if n > best_n:
            best, best_n = scheme, n
    return best, best_n
