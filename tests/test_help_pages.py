"""Node help pages (web/docs/<NodeId>.md): one per node, every input and output documented, quoted errors real.

The schemas are the nodes' own V3 define_schema, read inside real ComfyUI.
"""
from __future__ import annotations

import glob
import os
import re

import pytest

from host import REPO, load_host_nodes

pytestmark = pytest.mark.host

DOCS = os.path.join(REPO, "web", "docs")
# Combos whose options the pack defines (the others list the host's schedulers or the user's files).
PACK_COMBOS = ("mode", "execution", "resize", "guidance", "layout", "lpips_net")
# Words the messages interpolate besides input names: the request samplers name themselves ("the {what} sampler")
INTERPOLATED = ["ViBiD", "MPD"]


def schemas() -> list:
    import svd_inbetween
    from svd_inbetween.nodes import node_list
    svd_inbetween.register_model_folder()
    return [cls.define_schema() for cls in node_list()]


def page(node_id: str) -> str:
    with open(os.path.join(DOCS, f"{node_id}.md"), encoding="utf-8") as f:
        return f.read()


def section(text: str, title: str) -> str:
    """The body of the first '## <title>...' section (up to the next '## ')."""
    m = re.search(rf"^## {title}.*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m, f"no '## {title}' section"
    return m.group(1)


def source_text() -> str:
    """The pack's Python sources with implicitly concatenated string literals joined."""
    parts = []
    for folder in ("nodes", "samplers", "weights", "attention_patch", "wan"):
        for path in sorted(glob.glob(os.path.join(REPO, folder, "*.py"))):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    from svd_inbetween.nodes.common import MODEL_FOLDER
    text = re.sub(r"[\"']\s*\n\s*f?[\"']", "", "\n".join(parts))
    return text.replace("{MODEL_FOLDER}", MODEL_FOLDER)


def test_every_node_has_a_page_and_no_page_is_orphaned():
    ids = {s.node_id for s in schemas()}
    assert len(ids) == 11
    pages = {os.path.splitext(f)[0] for f in os.listdir(DOCS) if f.endswith(".md")}
    assert ids == pages, (ids - pages, pages - ids)


def test_pages_document_every_input_and_output():
    for schema in schemas():
        text = page(schema.node_id)
        assert text.startswith(f"# {schema.display_name}\n")
        assert "```" in text, f"{schema.node_id}: a small diagram"
        inputs = section(text, "Inputs")
        for inp in schema.inputs:
            assert f"`{inp.id}`" in inputs, f"{schema.node_id}: input {inp.id} not documented"
            if inp.display_name and inp.display_name != inp.id:  # the name the node shows, and its API id
                assert f"`{inp.display_name}` (API id `{inp.id}`)" in inputs, f"{schema.node_id}: {inp.id}"
            if inp.id in PACK_COMBOS:
                for option in inp.options:
                    assert f"`{option}`" in text, f"{schema.node_id}: {inp.id} option {option!r} not documented"
        outputs = section(text, "Output")
        for out in schema.outputs:
            name = out.display_name or out.id
            assert f"`{name}`" in outputs, f"{schema.node_id}: output {name} not documented"
        assert section(text, "Errors and fixes").strip(), schema.node_id


def test_the_same_input_shows_the_same_name_on_every_node():
    """The frame count and the seed: `frames` and `seed` wherever a pack node has one (the conditioning keeps its
    older ids video_frames and noise_seed, the API's, and shows these names)."""
    same = {"frames": {"video_frames", "frames"}, "seed": {"noise_seed", "seed"}}
    shown = {}
    for schema in schemas():
        for inp in schema.inputs:
            for name, ids in same.items():
                if inp.id in ids:
                    shown[f"{schema.node_id}.{inp.id}"] = (inp.display_name or inp.id, name)
    assert len(shown) >= 5, shown
    assert all(got == want for got, want in shown.values()), shown


def test_pages_with_a_mode_input_compare_every_mode_the_same_way():
    from svd_inbetween.attention_patch.modes import MODES
    tables = {}
    for schema in schemas():
        if any(i.id == "mode" for i in schema.inputs):
            body = section(page(schema.node_id), "Modes")
            rows = [ln for ln in body.splitlines() if ln.startswith("| `")]
            assert [r.split("`")[1] for r in rows] == list(MODES), schema.node_id
            header = next(ln for ln in body.splitlines() if ln.startswith("| mode"))
            assert "UNet calls" in header and "memory" in header and "backward weights" in header
            tables[schema.node_id] = "\n".join(ln for ln in body.splitlines() if ln.startswith("|"))
    assert len(tables) == 3 and len(set(tables.values())) == 1, "the modes tables differ between pages"


def _literal_chunks(quote: str, names: list[str]) -> list[str]:
    """The literal parts of a quoted message. Placeholders split it: <file>, N, numbers, WxH, '...', (a, b), quoted
    values, and the node's input names (messages interpolate them)."""
    words = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = rf"<[^>]+>|\(?\.\.\.\)?|\bWxH\b|\b[NMK]\b|\b\d+\b|\([a-z, ]+\)|'[a-z_]+'|\b(?:{words})\b"
    pieces = re.split(pattern, quote)
    return [p.strip(" ()':") for p in pieces if len(p.strip(" ()':")) >= 12]


def test_quoted_error_messages_exist_in_the_code():
    src = source_text()
    checked = 0
    for schema in schemas():
        errors = section(page(schema.node_id), "Errors and fixes")
        for quote in re.findall(r"`([^`]*input '[^`]*)`", errors.replace("\n  ", " ")):
            if "': " not in quote:
                continue  # the "<node>: input '<name>':" prefix itself
            for chunk in _literal_chunks(quote.split("': ", 1)[1], [i.id for i in schema.inputs] + INTERPOLATED):
                assert chunk in src, f"{schema.node_id}: quoted error text {chunk!r} is not in the pack's code"
                checked += 1
    assert checked > 40


def test_the_host_serves_the_pages_from_web_directory():
    import nodes
    load_host_nodes()
    web = [d for d in nodes.EXTENSION_WEB_DIRS.values() if os.path.realpath(d) == os.path.realpath(REPO + "/web")]
    assert web, nodes.EXTENSION_WEB_DIRS
    assert os.path.isfile(os.path.join(web[0], "docs", "SVDInbetweenSampler.md"))
