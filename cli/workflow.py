"""API-format workflows for the commands: find the keyframe nodes, apply the generation flags and
`--set NODE.input=VALUE`. Whether a server can run the result is client/object_info.py's question.

Everything that can be wrong with a workflow is found here, before anything is queued, and
raised as WorkflowError naming the node or flag.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Any

from ..client.object_info import PACK_PREFIX

START_TITLE, END_TITLE = "Start frame", "End frame"
WAN_KEYFRAMES = "SVDInbetweenWanKeyframes"
# generation flag -> (class_type, input) pairs it sets; "SVDInbetween*" = any node of this pack
FLAG_TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "width": ((PACK_PREFIX + "*", "width"), ("WanFirstLastFrameToVideo", "width")),
    "height": ((PACK_PREFIX + "*", "height"), ("WanFirstLastFrameToVideo", "height")),
    "frames": (("SVDInbetweenConditioning", "video_frames"), ("SVDInbetweenChain", "frames"),
               (WAN_KEYFRAMES, "frames"), ("WanFirstLastFrameToVideo", "length")),
    "steps": ((PACK_PREFIX + "*", "steps"), ("BasicScheduler", "steps"), ("KSampler", "steps")),
    "seed": (("SVDInbetweenSampler", "seed"), ("SVDInbetweenChain", "seed"), ("RandomNoise", "noise_seed"),
             ("KSampler", "seed")),
    "cfg": ((PACK_PREFIX + "*", "cfg"), ("KSampler", "cfg"), ("CFGGuider", "cfg")),
    "mode": ((PACK_PREFIX + "*", "mode"),),
    "recurrence": ((PACK_PREFIX + "*", "recurrence"),),
    "recurrence_ratio": ((PACK_PREFIX + "*", "recurrence_ratio"),),
    "forward_weight": ((PACK_PREFIX + "*", "forward_weight"),),
    "execution": ((PACK_PREFIX + "*", "execution"),),
    "motion_bucket_id": ((PACK_PREFIX + "*", "motion_bucket_id"),),
    "fps": ((PACK_PREFIX + "*", "fps"), ("CreateVideo", "fps")),
    "resize": ((PACK_PREFIX + "*", "resize"),),
}
MODEL_TARGETS = {"checkpoint": ("ImageOnlyCheckpointLoader", "ckpt_name"),
                 "backward": ("SVDInbetweenLoadBackwardWeights", "weights"),
                 "wan_model": ("UNETLoader", "unet_name")}


class WorkflowError(ValueError):
    pass


def load_workflow(path: str) -> dict:
    try:
        with open(path) as f:
            prompt = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkflowError(f"cannot read workflow {path}: {e}") from None
    if not isinstance(prompt, dict) or not prompt or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict) for n in prompt.values()):
        raise WorkflowError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}}); in ComfyUI use "
                            "Workflow -> Export (API)")
    return prompt


def title(node: dict) -> str | None:
    return (node.get("_meta") or {}).get("title")


def find_node(prompt: dict, ref: str, what: str) -> str:
    """A node id by id or by title (exactly one node may carry the title)."""
    if ref in prompt:
        return ref
    hits = [nid for nid, node in prompt.items() if title(node) == ref]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise WorkflowError(f"{what}: {len(hits)} nodes are titled {ref!r} ({', '.join(hits)}); name one by id")
    titles = sorted({t for t in map(title, prompt.values()) if t})
    raise WorkflowError(f"{what}: no node with id or title {ref!r}; titles in the workflow: "
                        f"{', '.join(titles) or 'none'}")


def keyframe_nodes(prompt: dict, start: str | None = None, end: str | None = None) -> tuple[str, str]:
    """Ids of the LoadImage nodes that get the start and end keyframe."""
    ids = []
    for ref, default, flag in ((start, START_TITLE, "--start-node"), (end, END_TITLE, "--end-node")):
        try:
            nid = find_node(prompt, ref or default, flag)
        except WorkflowError as e:
            if ref:
                raise
            raise WorkflowError(f"the workflow has no node titled {default!r} for the "
                                f"{'start' if flag == '--start-node' else 'end'} keyframe; title a LoadImage node "
                                f"so or pass {flag} ID|TITLE ({e})") from None
        if "image" not in prompt[nid]["inputs"]:
            raise WorkflowError(f"{flag} {nid} ({prompt[nid]['class_type']}) has no 'image' input: "
                                "point it at a LoadImage node")
        ids.append(nid)
    if ids[0] == ids[1]:
        raise WorkflowError(f"the start and end keyframes map to the same node {ids[0]}")
    return ids[0], ids[1]


def _targets(prompt: dict, class_type: str, name: str) -> list[str]:
    if class_type.endswith("*"):
        match = lambda ct: ct.startswith(class_type[:-1])  # noqa: E731
    else:
        match = lambda ct: ct == class_type  # noqa: E731
    return [nid for nid, node in prompt.items() if match(node["class_type"]) and name in node["inputs"]]


def _like(old: Any, value: Any) -> Any:
    """`value` in the type the workflow already uses for that input (the chain's frames is a string)."""
    if isinstance(old, bool) or isinstance(old, list):
        return value
    for kind in (str, float, int):
        if isinstance(old, kind):
            return kind(value)
    return value


def apply_flags(prompt: dict, flags: dict[str, Any]) -> None:
    """Set every given (non-None) generation flag on the nodes it targets; a flag that targets nothing fails."""
    for flag, value in flags.items():
        if value is None:
            continue
        hits = [(nid, name) for ct, name in FLAG_TARGETS[flag] for nid in _targets(prompt, ct, name)]
        if not hits:
            wanted = ", ".join(f"{ct}.{name}" for ct, name in FLAG_TARGETS[flag])
            raise WorkflowError(f"--{flag.replace('_', '-')}: the workflow has no input it applies to ({wanted}); "
                                "use --set NODE.input=VALUE")
        for nid, name in hits:
            scaled = value * interpolation_factor(prompt, nid) if flag == "fps" else value
            if flag == "frames" and prompt[nid]["class_type"] == WAN_KEYFRAMES:
                scaled = wan_frames(prompt, nid, value)
            prompt[nid]["inputs"][name] = _like(prompt[nid]["inputs"][name], scaled)


def wan_frames(prompt: dict, nid: str, frames: int) -> int:
    """--frames is the video you get. In Anchor Frame Bridging's workflow the passes before the anchor (forward and
    reverse, start + end) run one frame shorter than the last pass (start, anchor, end), as the authors' 82 and 83:
    the separate layout needs frames = keyframes (mod 4)."""
    def has_anchor(node: dict) -> bool:
        return isinstance(node["inputs"].get("anchor_image"), list)
    anchored = any(has_anchor(n) for n in prompt.values() if n["class_type"] == WAN_KEYFRAMES)
    return frames - 1 if anchored and not has_anchor(prompt[nid]) else frames


def interpolation_factor(prompt: dict, nid: str) -> int:
    """How many times the FrameInterpolate nodes feeding node `nid`'s images multiply its frame rate (1 if none):
    --fps names the generated video's rate, and svd_inbetween_film's CreateVideo plays FILM's doubled frames."""
    factor, link = 1, prompt[nid]["inputs"].get("images")
    while isinstance(link, list) and prompt.get(str(link[0]), {}).get("class_type") == "FrameInterpolate":
        inputs = prompt[str(link[0])]["inputs"]
        if not isinstance(inputs.get("multiplier"), int):
            break
        factor, link = factor * inputs["multiplier"], inputs.get("images")
    return factor


def apply_mode_settings(prompt: dict, mode: str, given: dict[str, bool]) -> None:
    """The mode's own steps and cfg (attention_patch/modes.py) on every input they target that the user did not
    set (`given`: flag -> set by the user); a workflow without such an input keeps running as it is."""
    from ..attention_patch.modes import mode_of as mode_spec
    spec = mode_spec(mode)
    for flag, value in (("steps", spec.steps), ("cfg", spec.cfg)):
        if not given.get(flag):
            for ct, name in FLAG_TARGETS[flag]:
                for nid in _targets(prompt, ct, name):
                    if not isinstance(prompt[nid]["inputs"][name], list):  # a linked input stays linked
                        prompt[nid]["inputs"][name] = _like(prompt[nid]["inputs"][name], value)


def apply_models(prompt: dict, models: dict[str, str | None]) -> None:
    for flag, value in models.items():
        if not value:
            continue
        class_type, name = MODEL_TARGETS[flag]
        hits = _targets(prompt, class_type, name)
        if not hits:
            raise WorkflowError(f"--{flag.replace('_', '-')}: the workflow has no {class_type} node to load it")
        for nid in hits:
            prompt[nid]["inputs"][name] = value


def drop_backward_weights(prompt: dict) -> None:
    """Remove SVDInbetweenLoadBackwardWeights and feed its consumers the model it was given."""
    for nid in _targets(prompt, "SVDInbetweenLoadBackwardWeights", "model"):
        source = prompt.pop(nid)["inputs"]["model"]
        for node in prompt.values():
            for key, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and value[0] == nid:
                    node["inputs"][key] = source


def parse_set(text: str) -> tuple[str, str, Any]:
    """'NODE.input=VALUE' (NODE = id or title; VALUE JSON if it parses, else a string)."""
    target, eq, raw = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not eq or not dot or not node or not name:
        raise WorkflowError(f"--set {text!r}: expected NODE.input=VALUE (NODE = node id or title)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node, name, value


def apply_sets(prompt: dict, sets: list[str]) -> None:
    for text in sets:
        node, name, value = parse_set(text)
        prompt[find_node(prompt, node, f"--set {text}")]["inputs"][name] = value


def mode_of(prompt: dict) -> str | None:
    modes = [n["inputs"]["mode"] for nid in _targets(prompt, PACK_PREFIX + "*", "mode") for n in [prompt[nid]]]
    return modes[0] if modes else None


def seed_of(prompt: dict) -> int | None:
    for ct, name in FLAG_TARGETS["seed"]:
        for nid in _targets(prompt, ct, name):
            value = prompt[nid]["inputs"][name]
            if isinstance(value, int):
                return value
    return None


def settings_of(prompt: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    """The value each generation flag has in the prompt (first node it targets), for the records."""
    out = {}
    for key in keys:
        for ct, name in FLAG_TARGETS.get(key, ()):
            hits = _targets(prompt, ct, name)
            if hits and not isinstance(prompt[hits[0]]["inputs"][name], list):
                out[key] = prompt[hits[0]]["inputs"][name]
                break
    return out


def with_keyframes(prompt: dict, nodes: tuple[str, str], names: tuple[str, str]) -> dict:
    p = copy.deepcopy(prompt)
    for nid, name in zip(nodes, names):
        p[nid]["inputs"]["image"] = name
    return p


def fingerprint(prompt: dict) -> str:
    """Identity of a generation: the prompt without titles (keyframes enter by content-hash names)."""
    bare = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in prompt.items()}
    return hashlib.sha256(json.dumps(bare, sort_keys=True).encode()).hexdigest()[:20]


def upload_name(path: str) -> str:
    """Keyframes are uploaded under their content hash: the same name on every server, no clashes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:24] + os.path.splitext(path)[1].lower()
