"""What a server lacks to run a prompt, read from its /object_info: node types (this pack not loaded, a
ComfyUI too old for the host nodes a prompt uses, other custom nodes) and model files missing from its folders."""
from __future__ import annotations

from typing import Any

PACK_PREFIX = "SVDInbetween"  # every node type of this pack starts so
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")
# ComfyUI's own nodes the pack's prompts use that older hosts lack (FILM: svd_inbetween_film, `eval --mode film`)
HOST_NODES_SINCE = {"FrameInterpolate": "0.33", "FrameInterpolationModelLoader": "0.33"}


def _combo_options(spec: Any) -> list | None:
    if isinstance(spec, list) and spec:
        if isinstance(spec[0], list):
            return spec[0]
        if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return spec[1].get("options")
    return None


def check_against_server(prompt: dict, object_info: dict, skip_nodes: tuple[str, ...] = ()) -> list[str]:
    """What a server lacks to run `prompt`: node classes (pack not loaded) and model files."""
    problems = []
    missing = sorted({n["class_type"] for n in prompt.values()} - set(object_info))
    if missing:
        pack = [c for c in missing if c.startswith(PACK_PREFIX)]
        if pack:
            hint = " (the svd_inbetween pack is not loaded there: install it in custom_nodes/ and check the " \
                   "server log for IMPORT FAILED)"
        elif set(missing) <= set(HOST_NODES_SINCE):
            hint = "".join(sorted({f" (ComfyUI {HOST_NODES_SINCE[c]} and later ship them: update that ComfyUI)"
                                   for c in missing}))
        else:
            hint = " (install the custom nodes that provide them)"
        problems.append(f"missing node types {', '.join(missing)}{hint}")
        return problems
    for nid, node in prompt.items():
        if nid in skip_nodes:
            continue
        spec_inputs = object_info[node["class_type"]].get("input", {})
        specs = {**spec_inputs.get("required", {}), **spec_inputs.get("optional", {})}
        for name, value in node["inputs"].items():
            if not (isinstance(value, str) and value.lower().endswith(MODEL_EXTS)):
                continue
            options = _combo_options(specs.get(name))
            if options is not None and value not in options:
                problems.append(f"model file {value!r} (node {nid} {node['class_type']}.{name}) is not on the server")
    return problems
