"""API-format <-> UI-format (litegraph) workflows, read the way ComfyUI's frontend reads them.

Node definitions are dicts shaped like one entry of `/object_info` (`input`, `input_order`,
`output`, `output_name`, `deprecated`); `definitions()` builds them in-process from the node
classes, a test against a live server passes `/object_info` itself.

How the frontend reads `widgets_values` (seen on frontends 1.27, 1.35 and 1.49): the node's widgets
are made from the host's definition, in input order, and take the saved values by position. A
seed-like input is followed by its "control after generate" value, an image upload by its
"image" value, a dynamic combo (V3 DynamicCombo) by the widgets of the option it holds, named
`<combo>.<input>`. Widgets the workflow has no value for keep their defaults; values beyond the
host's widgets are dropped. A workflow written for the newest host therefore loads on an older
one as long as the newer widgets come after the shared ones, which `check_workflow` verifies.
"""
from __future__ import annotations

import json
import os

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# combo values that name a file (model, image): a value the host lacks is a missing file, not a wrong value
FILE_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".png", ".jpg", ".jpeg", ".webp")
# deprecated nodes a template may still use because no replacement exists on every supported host: ImageBatch
# (deprecated on 0.8 and 0.33, still loads and runs there; their BatchImagesNode is not on 0.3.64)
DEPRECATED_ALLOWED = frozenset({"ImageBatch"})


# ---------------------------------------------------------------- definitions

def definition(node_class) -> dict:
    """What /object_info says about one node class (the parts the conversion needs)."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):  # V3 nodes describe themselves
        info = node_class.GET_NODE_INFO_V1()
        return {k: info[k] for k in ("input", "input_order", "output", "output_name", "deprecated") if k in info}
    spec = node_class.INPUT_TYPES()
    types = list(node_class.RETURN_TYPES)
    return {"input": spec, "input_order": {k: list(v) for k, v in spec.items()}, "output": types,
            "output_name": list(getattr(node_class, "RETURN_NAMES", None) or types),
            "deprecated": bool(getattr(node_class, "DEPRECATED", False))}


def definitions(classes: dict) -> dict:
    return {name: definition(cls) for name, cls in classes.items()}


def is_widget(typ) -> bool:
    return isinstance(typ, list) or typ in WIDGET_TYPES or typ == DYNAMIC_COMBO


def _opts(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _items(section_specs: dict, order: dict | None = None) -> list[tuple[str, object, dict]]:
    out = []
    for section in ("required", "optional"):
        specs = section_specs.get(section) or {}
        names = (order or {}).get(section) or list(specs)
        out += [(name, specs[name][0], _opts(specs[name])) for name in names if name in specs]
    return out


def top_inputs(defn: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) of the visible inputs, required then optional, in definition order."""
    return _items(defn.get("input", {}), defn.get("input_order"))


def combo_options(typ, opts: dict) -> list:
    if typ == DYNAMIC_COMBO:
        return [o["key"] for o in opts.get("options", [])]
    return typ if isinstance(typ, list) else list(opts.get("options", []))


def default_value(typ, opts: dict):
    """The value a freshly made widget holds (the frontend's rules)."""
    if "default" in opts:
        return opts["default"]
    if isinstance(typ, list) or typ in ("COMBO", DYNAMIC_COMBO):
        options = combo_options(typ, opts)
        return options[0] if options else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(typ)


def _option_inputs(opts: dict, key) -> list[tuple[str, object, dict]]:
    for option in opts.get("options", []):
        if option["key"] == key:
            return _items(option.get("inputs", {}))
    return []


def extra_slots(opts: dict) -> list[str]:
    """Serialized values that follow a widget's own: control after generate, image upload."""
    return ((["control"] if opts.get("control_after_generate") else [])
            + (["upload"] if opts.get("image_upload") else []))


def walk(defn: dict, value_of) -> list[tuple[str, object, dict]]:
    """Every input in frontend order; `value_of(name, typ, opts)` is called on each in turn, and a dynamic
    combo is followed by the inputs of the option it returns."""
    out = []

    def visit(items, prefix):
        for name, typ, opts in items:
            full = prefix + name
            out.append((full, typ, opts))
            chosen = value_of(full, typ, opts)
            if typ == DYNAMIC_COMBO:
                visit(_option_inputs(opts, chosen), full + ".")
    visit(top_inputs(defn), "")
    return out


# ---------------------------------------------------------------- reading a UI node as the frontend does

def read_widgets(defn: dict, widgets_values) -> tuple[dict, list[tuple[str, str, object, object, dict]], list]:
    """-> ({widget input: value}, [(input, slot kind, saved value or None, type, options)], the node's
    inputs as `walk` gives them with those values) for one node."""
    if isinstance(widgets_values, dict):  # some frontends save a name -> value map
        queue, by_name = [], widgets_values
    else:
        queue, by_name = list(widgets_values or []), None
    values, slots = {}, []

    def take(name, kind, typ, opts):
        if by_name is not None:
            saved = by_name.get(name) if kind == "value" else None
        else:
            saved = queue.pop(0) if queue else None
        slots.append((name, kind, saved, typ, opts))
        return saved

    def value_of(name, typ, opts):
        if not is_widget(typ):
            return None
        saved = take(name, "value", typ, opts)
        for kind in extra_slots(opts):
            take(name, kind, typ, opts)
        values[name] = default_value(typ, opts) if saved is None else saved
        return values[name]
    inputs = walk(defn, value_of)
    return values, slots, inputs


def ui_to_api(ui: dict, defs: dict) -> dict:
    """The API prompt the frontend makes from a UI workflow on the host `defs` describes."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        defn = defs[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values, _, walked = read_widgets(defn, node.get("widgets_values"))
        inputs = {}
        for name, typ, _ in walked:
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
            elif is_widget(typ):
                inputs[name] = values[name]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def api_as_host_reads(api: dict, defs: dict) -> dict:
    """An API prompt as the frontend of this host would build it from the same graph: every widget input
    of the host's definition, with the prompt's value or the host's default; inputs the host lacks dropped."""
    out = {}
    for nid, node in api.items():
        given = node["inputs"]
        inputs = {}
        for name, typ, opts in walk(defs[node["class_type"]], lambda n, t, o: given.get(n, default_value(t, o))):
            if name in given:
                inputs[name] = given[name]
            elif is_widget(typ):
                inputs[name] = default_value(typ, opts)
        out[nid] = {"class_type": node["class_type"], "inputs": inputs}
    return out


# ---------------------------------------------------------------- checking a UI workflow against a host

def _value_problem(kind: str, value, typ, opts: dict) -> str | None:
    if kind == "control":
        return None if value in CONTROL_VALUES else f"control value {value!r} is not one of {CONTROL_VALUES}"
    if kind == "upload":
        return None if value == "image" else f"upload value {value!r} should be 'image'"
    if isinstance(typ, list) or typ in ("COMBO", DYNAMIC_COMBO):
        if isinstance(value, str) and value.lower().endswith(FILE_EXTS):
            return None  # a file the user may not have yet: the frontend reports it as missing, not as invalid
        options = combo_options(typ, opts)
        return None if value in options else f"{value!r} is not one of {options}"
    if typ == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if typ == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ == "INT" and value != int(value)):
            return f"{value!r} is not {'an integer' if typ == 'INT' else 'a number'}"
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return f"{value!r} is outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def check_workflow(ui: dict, defs: dict) -> list[str]:
    """What a host's frontend would get wrong with this UI workflow: unknown or deprecated nodes, saved
    values that land on a widget that cannot hold them, links into inputs the host does not have."""
    problems = []
    for node in ui["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        defn = defs.get(node["type"])
        if defn is None:
            problems.append(f"{where}: no such node type on this host")
            continue
        if defn.get("deprecated") and node["type"] not in DEPRECATED_ALLOWED:
            problems.append(f"{where}: deprecated on this host")
        _, slots, walked = read_widgets(defn, node.get("widgets_values"))
        for name, kind, saved, typ, opts in slots:
            if saved is not None:
                problem = _value_problem(kind, saved, typ, opts)
                if problem:
                    problems.append(f"{where}: widget {name!r}: {problem}")
        names = {n for n, _, _ in walked}
        for i in node.get("inputs", []):
            if i.get("link") is not None and i["name"] not in names:
                problems.append(f"{where}: linked input {i['name']!r} does not exist on this host")
    return problems


# ---------------------------------------------------------------- writing a UI workflow

def api_to_ui(api: dict, defs: dict, properties: dict | None = None, extra: dict | None = None,
              labels: dict | None = None) -> dict:
    """A UI workflow for `api` laid out in columns by depth; `properties` adds node properties by node id,
    `labels` ({node id: {widget: label}}) renames widgets the way the frontend saves a rename."""
    ids = sorted(api, key=int)
    links, nodes = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    node_inputs: dict[str, list[dict]] = {}
    walked = {nid: walk(defs[api[nid]["class_type"]],
                        lambda n, t, o, given=api[nid]["inputs"]: given.get(n, default_value(t, o)))
              for nid in ids}
    for nid in ids:
        given = api[nid]["inputs"]
        ins = []
        for name, typ, opts in walked[nid]:
            value = given.get(name)
            if isinstance(value, list):
                src, slot = value
                src_type = defs[api[src]["class_type"]]["output"][slot]
                links.append([len(links) + 1, int(src), slot, int(nid), len(ins), src_type])
                out_links.setdefault((src, slot), []).append(len(links))
                entry = {"name": name, "type": src_type, "link": len(links)}
                if is_widget(typ):
                    entry["widget"] = {"name": name}
                ins.append(entry)
            elif not is_widget(typ):
                ins.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": None})
            elif name in (labels or {}).get(nid, {}):
                ins.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": None,
                            "widget": {"name": name}, "label": labels[nid][name]})
        node_inputs[nid] = ins
    sources = {nid: [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list)] for nid in ids}
    column = {nid: 0 for nid in ids}
    for _ in ids:  # one column per link depth (longest path; ids need not be in graph order)...
        column = {nid: max([column[src] + 1 for src in sources[nid]], default=0) for nid in ids}
    for nid in ids:  # ...and a node without inputs right before its first consumer, not far left of it
        consumers = [column[c] for c in ids if nid in sources[c]]
        if not sources[nid] and consumers:
            column[nid] = min(consumers) - 1
    column_bottom: dict[int, int] = {}
    for order, nid in enumerate(ids):
        defn = defs[api[nid]["class_type"]]
        given = api[nid]["inputs"]
        depth = column[nid]
        names = defn.get("output_name") or defn["output"]
        outs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                for i, (n, t) in enumerate(zip(names, defn["output"]))]
        widgets = []
        for name, typ, opts in walked[nid]:
            if is_widget(typ):
                value = given.get(name, default_value(typ, opts))
                widgets.append(default_value(typ, opts) if isinstance(value, list) else value)
                widgets += [{"control": "fixed", "upload": "image"}[k] for k in extra_slots(opts)]
        slots = max(len(node_inputs[nid]), len(outs))
        preview = 160 if api[nid]["class_type"] == "LoadImage" else 0
        # roughly what the canvas draws: a title, one row per slot and per widget (an image preview for LoadImage)
        height = 40 + 22 * (slots + len(widgets)) + preview
        # Nodes 2.0 (frontend 1.58's Vue nodes) draws the same node taller: larger rows, a widget's label above or
        # beside it, a model-file badge; the column leaves room for that height, so no node covers the next one
        shown_widgets = sum(1 for name, typ, _ in walked[nid] if is_widget(typ))
        vue_height = 100 + 30 * slots + 48 * shown_widgets + preview
        top = column_bottom.get(depth, 40)
        column_bottom[depth] = top + max(height, vue_height) + 40
        props = {"Node name for S&R": api[nid]["class_type"], **(properties or {}).get(nid, {})}
        node = {"id": int(nid), "type": api[nid]["class_type"], "pos": [40 + 360 * depth, top],
                "size": [320, height], "flags": {}, "order": order, "mode": 0, "inputs": node_inputs[nid],
                "outputs": outs, "properties": props, "widgets_values": widgets}
        if "_meta" in api[nid]:
            node["title"] = api[nid]["_meta"]["title"]
        nodes.append(node)
    return {"last_node_id": max(int(i) for i in ids), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": dict(extra or {}), "version": 0.4}


def load_workflow(folder: str, name: str) -> dict:
    """workflows/<name>.json or workflows/api/<name>.json, as saved."""
    with open(os.path.join(folder, name + ".json")) as f:
        return json.load(f)


def workflow_names(folder: str) -> list[str]:
    """The templates in a workflows folder (every .json file; the frontend lists each one)."""
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))
