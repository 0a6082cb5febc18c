"""API-format <-> UI-format (litegraph) workflow conversion, from ComfyUI's node definitions.

Used by tools/build_workflows.py to write the UI files and by the tests to check
that each UI workflow and its API twin describe the same graph.
"""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _inputs(node_class) -> list[tuple[str, object, dict]]:
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            typ = value[0]
            opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            out.append((name, typ, opts))
    return out


def _is_widget(typ) -> bool:
    return isinstance(typ, list) or typ in WIDGET_TYPES


def _outputs(node_class) -> list[tuple[str, str]]:
    types = list(node_class.RETURN_TYPES)
    names = list(getattr(node_class, "RETURN_NAMES", None) or types)
    return list(zip(names, types))


def widget_values(node_class, inputs: dict) -> list:
    values = []
    for name, typ, opts in _inputs(node_class):
        if not _is_widget(typ) or isinstance(inputs.get(name), list):
            continue
        values.append(inputs.get(name, opts.get("default")))
        if opts.get("control_after_generate"):
            values.append("fixed")
        if opts.get("image_upload"):
            values.append("image")
    return values


def api_to_ui(api: dict, classes: dict) -> dict:
    ids = sorted(api, key=int)
    links, nodes = [], []
    link_id = 0
    out_links: dict[tuple[str, int], list[int]] = {}
    node_inputs: dict[str, list[dict]] = {}
    for nid in ids:
        node_class = classes[api[nid]["class_type"]]
        ins = []
        for name, typ, _ in _inputs(node_class):
            value = api[nid]["inputs"].get(name)
            if isinstance(value, list):
                link_id += 1
                src, slot = value
                src_type = _outputs(classes[api[src]["class_type"]])[slot][1]
                links.append([link_id, int(src), slot, int(nid), len(ins), src_type])
                out_links.setdefault((src, slot), []).append(link_id)
                entry = {"name": name, "type": src_type, "link": link_id}
                if _is_widget(typ):
                    entry["widget"] = {"name": name}
                ins.append(entry)
            elif not _is_widget(typ):
                ins.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": None})
        node_inputs[nid] = ins
    column: dict[str, int] = {}
    column_bottom: dict[int, int] = {}
    for order, nid in enumerate(ids):
        node_class = classes[api[nid]["class_type"]]
        depth = 0
        for v in api[nid]["inputs"].values():
            if isinstance(v, list):
                depth = max(depth, column.get(v[0], 0) + 1)
        column[nid] = depth
        outs = [{"name": n, "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                for i, (n, t) in enumerate(_outputs(node_class))]
        widgets = widget_values(node_class, api[nid]["inputs"])
        slots = max(len(node_inputs[nid]), len(outs))
        # roughly what the frontend draws: a title, one row per slot and per widget (an image preview for LoadImage)
        height = 40 + 22 * (slots + len(widgets)) + (160 if api[nid]["class_type"] == "LoadImage" else 0)
        top = column_bottom.get(depth, 40)
        column_bottom[depth] = top + height + 40
        node = {"id": int(nid), "type": api[nid]["class_type"], "pos": [40 + 360 * depth, top],
                "size": [320, height], "flags": {}, "order": order, "mode": 0, "inputs": node_inputs[nid],
                "outputs": outs, "properties": {"Node name for S&R": api[nid]["class_type"]},
                "widgets_values": widgets}
        if "_meta" in api[nid]:
            node["title"] = api[nid]["_meta"]["title"]
        nodes.append(node)
    return {"last_node_id": max(int(i) for i in ids), "last_link_id": link_id, "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(ui: dict, classes: dict) -> dict:
    """The API prompt the UI graph stands for (widgets by definition order, links by slot)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        node_class = classes[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, typ, opts in _inputs(node_class):
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
            elif _is_widget(typ):
                inputs[name] = values.pop(0)
                if opts.get("control_after_generate") or opts.get("image_upload"):
                    values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
