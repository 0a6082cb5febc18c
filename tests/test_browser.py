"""Server tier: the pack as a ComfyUI user meets it, in the real frontend in headless Chromium.

Starts ComfyUI (main.py) with the pack and the tiny test loader, opens the web UI and, through
that frontend's own UI (1.27 on ComfyUI 0.3.64, 1.35 on 0.8, 1.49 on 0.33; see browser_ui.py):
- finds every pack node with the node search box and reads every input's tooltip on hover;
- opens the node help page of SVDInbetweenSampler (web/docs) from the selection toolbox;
- shows each template's thumbnail in the template browser;
- opens every shipped workflow from the template browser: no missing node, the missing model
  files named with their folders, the graph screenshotted, the tiny models swapped in the page,
  the prompt the frontend builds equal to the API twin as this host reads it, queued and run;
- opens the app template in app mode (1.49) and runs it from the app's Run button;
- shows an error for a missing node type and for a missing weights file in mode gi;
- runs every mode from each blueprint at the mode's own steps and cfg, with and without the weights file.

Needs Debian `chromium` and Playwright for Python (.ci/run installs both). Screenshots land in
the test's tmp_path; SVD_INBETWEEN_SCREENSHOT_DIR=docs/screenshots copies them there, and
SVD_INBETWEEN_THUMBNAIL_DIR=workflows writes the templates' .jpg thumbnails.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import browser_ui as bui
from doc_screenshots import shown_screenshots
from host import NODE_IDS, REPO
from ui_format import api_as_host_reads, load_workflow, workflow_names

pytestmark = pytest.mark.server

UI_DIR = os.path.join(REPO, "workflows")
API_DIR = os.path.join(UI_DIR, "api")
HELP_DIR = os.path.join(REPO, "web", "docs")
MODULE = "svd_inbetween"  # the pack's folder name in custom_nodes/: its entry in the template browser
PACK_MODULE = "custom_nodes.svd_inbetween"
HELP_NODE = "SVDInbetweenSampler"
LINEAR_MODE = (1, 35)  # the first tested frontend that opens a workflow saved with extra.linearMode as an app
APP_VIEW = (1, 49)  # the first tested frontend with the template browser's App view
APP_FLAG = (1, 58)  # from here the App view lists only templates flagged isApp: never an extension's
VIEWPORT = {"width": 1280, "height": 800}
SCALE = 2  # HiDPI screenshots (2560x1600): node text stays readable when a wide graph is fit to the window
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Set before the page loads: skip the templates dialog and the app-mode tour, draw node text even zoomed
# out (readable screenshots), hide the minimap and the FPS box, show tooltips after 100 ms instead of 500.
UI_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.OnboardingCoachmarks.Seen": ["appMode", "firstRun"],
               "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Minimap.Visible": False,
               "Comfy.Graph.CanvasInfo": False, "LiteGraph.Node.TooltipDelay": 100}
# Nodes 2.0 (frontend 1.58's Vue-rendered nodes) on or off: .ci/run runs this file both ways on 1.58.1
VUE_NODES = os.environ.get("SVD_INBETWEEN_VUE_NODES") == "1"
UI_SETTINGS["Comfy.VueNodes.Enabled"] = VUE_NODES
# Where each node is drawn, in page px, title included: the DOM element of a Vue node, else the canvas node's
# bounding box (LiteGraph's getBounding) mapped to the page.
JS_NODE_RECTS = """() => app.graph.nodes.map(n => {
    const el = document.querySelector(`[data-node-id="${n.id}"]`);
    if (el && el.getClientRects().length) { const r = el.getBoundingClientRect();
        return [String(n.id), r.left, r.top, r.right, r.bottom]; }
    const b = n.getBounding ? n.getBounding() : [n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.size[0],
                                                   n.size[1] + LiteGraph.NODE_TITLE_HEIGHT];
    const p0 = app.canvasPosToClientPos([b[0], b[1]]), p1 = app.canvasPosToClientPos([b[0] + b[2], b[1] + b[3]]);
    return [String(n.id), p0[0], p0[1], p1[0], p1[1]];
})"""

# node ids are numbers up to frontend 1.35 and strings on 1.49: look a saved id up either way
# An optional last argument names a subgraph node: then the ids are those of the nodes inside its subgraph.
JS_BY_ID = ("const byId = (id) => g.getNodeById(id) ?? g.getNodeById(Number(id)) ?? g.getNodeById(String(id));")
JS_GRAPH = ("const g = sub == null ? app.graph : (app.graph.getNodeById(sub) ?? app.graph.getNodeById(String(sub)))"
            ".subgraph;")
JS_SWAP = """([oldId, newType, sub]) => {""" + JS_GRAPH + JS_BY_ID + """
    const old = byId(oldId), neu = LiteGraph.createNode(newType);
    neu.pos = [...old.pos];
    g.add(neu);
    const targets = [];
    old.outputs.forEach((out, i) => (out.links || []).forEach(id => {
        const l = g.links.get ? g.links.get(id) : g.links[id]; targets.push([i, l.target_id, l.target_slot]); }));
    g.remove(old);
    for (const [i, tid, ts] of targets) neu.connect(i, byId(tid), ts);
    return neu.id;
}"""
JS_SET_WIDGETS = """([nodeId, values, sub]) => {""" + JS_GRAPH + JS_BY_ID + """
    const n = byId(nodeId), missing = [];
    for (const [k, v] of Object.entries(values)) {
        const w = (n.widgets || []).find(w => w.name === k);
        if (!w) { missing.push(k); continue; }
        w.value = v; w.callback?.(v, app.canvas, n);
    }
    app.graph.setDirtyCanvas(true, true);
    return missing;
}"""
JS_PROMPT = """async () => {
    const out = (await app.graphToPrompt()).output, res = {};
    for (const [id, n] of Object.entries(out)) res[id] = {class_type: n.class_type, inputs: n.inputs};
    return res;
}"""
# Canvas -> page coordinates of an input: the middle of its widget, else its socket.
JS_INPUT_POS = """([nodeId, name]) => {
    const n = app.graph.getNodeById(nodeId);
    const w = (n.widgets || []).find(w => w.name === name);
    let p;
    if (w) p = [n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + (w.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT) / 2];
    else {
        const i = n.inputs.findIndex(s => s.name === name);
        if (i < 0) return null;
        p = n.getConnectionPos(true, i);
    }
    return app.canvasPosToClientPos(p);
}"""


# Nodes 2.0: the middle of an input's label, a widget row (data-widget-name) or else the socket's row.
JS_VUE_INPUT_POS = """([nodeId, name]) => {
    const root = document.querySelector(`[data-node-id="${nodeId}"]`);
    if (!root) return null;
    let el = root.querySelector(`[data-widget-name="${name}"]`);
    if (el) {  // the widget's middle: its value (its label's tooltip only names the input)
        const r = el.getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2];
    }
    if (!el) {
        const i = app.graph.getNodeById(nodeId).inputs.findIndex(s => s.name === name);
        el = root.querySelector(`[data-slot-key="${nodeId}-in-${i}"]`)?.closest('[data-grace-area-trigger]');
    }
    if (!el) return null;
    // the label itself (the row also holds the socket's dot, whose tooltip names the input's type)
    const label = [...el.querySelectorAll('*')].find(e => !e.children.length && e.textContent.trim() === name);
    const r = (label || el).getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2];
}"""
# The canvas's tooltip (.node-tooltip) or Nodes 2.0's (role=tooltip), visible, with the text wanted.
JS_TOOLTIPS = """() => [...document.querySelectorAll('.node-tooltip, [role=tooltip]')]
    .filter(e => e.getClientRects().length).map(e => e.innerText.trim()).filter(Boolean)"""
# Nodes 2.0 appends a combo's current value after the description ("<tooltip>\n\n<value>")
JS_TOOLTIP_SHOWN = ("(want) => (" + JS_TOOLTIPS + ")().some(t => t === want || t.startsWith(want + '\\n')"
                    " || t.startsWith(want + ' '))")


def _missing(reason: str) -> None:
    """Skip loudly; fail where the browser must be there (.ci/run sets SVD_INBETWEEN_REQUIRE_BROWSER=1)."""
    if os.environ.get("SVD_INBETWEEN_REQUIRE_BROWSER") == "1":
        pytest.fail(reason.replace("SKIPPED", "FAILED") + " SVD_INBETWEEN_REQUIRE_BROWSER=1 requires it.")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("SVD_INBETWEEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.isfile(path):
        _missing(f"!! BROWSER TEST SKIPPED: no Chromium at {path}. Install it with "
                 "`apt-get install -y chromium chromium-driver` (.ci/run does) or set SVD_INBETWEEN_CHROMIUM.")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("!! BROWSER TEST SKIPPED: Playwright for Python missing: `pip install playwright` "
                 "(.ci/run does; never `playwright install`, the system Chromium is used).")
    return path


def keep(shot: str, name: str) -> None:
    """Copy a screenshot to SVD_INBETWEEN_SCREENSHOT_DIR (e.g. docs/screenshots) when set, if a doc page shows
    one of that name (doc_screenshots.py): the test takes every configuration's, the docs show one of each."""
    target = os.environ.get("SVD_INBETWEEN_SCREENSHOT_DIR")
    if target and name in shown_screenshots():
        os.makedirs(target, exist_ok=True)
        shutil.copy(shot, os.path.join(target, name))


def assert_png(path: str, min_bytes: int = 20_000) -> None:
    with open(path, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > min_bytes, path  # a drawn page, not a blank one


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(server, page, base, weights name, /object_info, frontend version) with the UI open on a live server."""
    chromium = _chromium()
    import tiny_models
    from comfy_job import prepare_base
    from playwright.sync_api import sync_playwright
    from server_harness import ComfyServer

    base = str(tmp_path_factory.mktemp("comfy_base"))
    weights = prepare_base(base, film=tiny_models.host_has_film())
    with ComfyServer(base) as server, sync_playwright() as pw:
        for key, value in UI_SETTINGS.items():
            res = server.post(f"/settings/{key}", value)
            assert "http_status" not in res, (key, res)
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=SCALE)
            console: list[str] = []
            page.on("pageerror", lambda e: console.append(str(e)))
            page.goto(server.url)
            page.wait_for_function("() => window.app && window.app.graph && window.app.vueAppReady",
                                   timeout=120_000)
            page.evaluate(bui.JS_FRAME)
            page.wait_for_timeout(1000)
            # 1.49's default graph names models this server lacks; nothing shown may concern the pack
            shown = bui.errors(page)
            assert not [e for e in shown if "svd" in e.lower()], f"error about the pack on first load: {shown}"
            bui.dismiss_errors(page)
            info = server.get("/object_info")
            yield server, page, base, weights, info, bui.frontend_version(page)
            assert not [e for e in console if "svd" in e.lower()], console
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def closed_dialogs(ui):
    """Each test starts on a bare canvas: a failed test leaves no dialog or error behind for the next."""
    yield
    page = ui[1]
    bui.close_templates(page)
    bui.dismiss_errors(page)


def listed_templates(info: dict) -> list[str]:
    """The pack's templates this host lists: svd_inbetween_film only where it has FrameInterpolate (templates.py)."""
    from svd_inbetween.templates import unavailable_templates
    hidden = set(unavailable_templates(info, UI_DIR))
    assert hidden <= {"svd_inbetween_film"}, hidden
    return [n for n in workflow_names(UI_DIR) if n not in hidden]


def pack_nodes(info: dict) -> dict:
    nodes = {k: v for k, v in info.items() if v.get("python_module") == PACK_MODULE}
    assert NODE_IDS <= set(nodes), NODE_IDS - set(nodes)
    return nodes


def test_node_search_finds_every_pack_node(ui):
    server, page, _, _, info, _ = ui
    for node_id, spec in sorted(pack_nodes(info).items()):
        words = spec["display_name"].split()
        query = " ".join(words[1:] or words).lower()
        query = query[:max(3, len(query) - 2)]  # part of the name, e.g. "inbetween recurrent eul"
        for _ in range(2):  # once more on a blank graph if a dropped click left another node (1.58, a busy page)
            bui.blank_graph(page)
            bui.search_and_add(page, query, spec["display_name"])
            page.wait_for_function("() => app.graph.nodes.length > 0", timeout=10_000)
            added = page.evaluate("() => app.graph.nodes.map(n => n.type)")
            if added == [node_id]:
                break
        assert added == [node_id], f"search {query!r} then click: graph has {added}, wanted {node_id}"
    bui.blank_graph(page)


def test_every_input_shows_its_tooltip_on_hover(ui):
    server, page, _, _, info, _ = ui
    read = 0
    for node_id, spec in sorted(pack_nodes(info).items()):
        bui.blank_graph(page)
        nid = bui.add_node(page, node_id, (150, 120))
        # a tall node (the chain) is zoomed out to fit the window, so every input can be hovered
        page.evaluate("(id) => { const n = app.graph.getNodeById(id), h = n.size[1] + 160;"
                      " app.canvas.ds.scale = Math.min(1, window.innerHeight / h); app.canvas.setDirty(true, true); }",
                      nid)
        page.evaluate(bui.JS_FRAME)
        for section in ("required", "optional"):
            for name, ispec in spec["input"].get(section, {}).items():
                want = ispec[1].get("tooltip") if len(ispec) > 1 else None
                assert want, f"{node_id}.{name} has no tooltip in /object_info"
                pos = page.evaluate(JS_VUE_INPUT_POS if VUE_NODES else JS_INPUT_POS, [nid, name])
                assert pos, f"{node_id}.{name}: neither a widget nor a socket in the UI"
                page.mouse.move(5, 5)
                page.mouse.move(pos[0], pos[1], steps=2)
                try:
                    page.wait_for_function(JS_TOOLTIP_SHOWN, arg=want.strip(), timeout=5_000)
                except Exception:  # playwright TimeoutError: say what was shown instead
                    raise AssertionError(f"{node_id}.{name}: tooltip {want!r} not shown; shown: "
                                         f"{page.evaluate(JS_TOOLTIPS)}") from None
                read += 1
    assert read >= 60  # 8 pack nodes, 75+ inputs
    page.mouse.move(5, 5)
    bui.blank_graph(page)


def test_node_help_panel_shows_the_help_page(ui, tmp_path):
    """The node's help page (web/docs/<NodeId>.md, served through WEB_DIRECTORY) in the frontend's help view."""
    server, page, _, _, _, version = ui
    path = os.path.join(HELP_DIR, HELP_NODE + ".md")
    assert os.path.isfile(path), f"{path} missing: the help pages are served from web/docs/"
    with open(path, encoding="utf-8") as f:
        heading, sentence = bui.markdown_heading_and_sentence(f.read())
    bui.blank_graph(page)
    nid = bui.add_node(page, HELP_NODE, (320, 260))
    with page.expect_response(lambda r: f"/extensions/{MODULE}/docs/{HELP_NODE}" in r.url and r.ok) as got:
        help_view = bui.open_node_help(page, nid)
    assert got.value.url.endswith(".md"), got.value.url
    page.wait_for_function("([el, h]) => el.innerText.includes(h)", arg=[help_view.element_handle(), heading],
                           timeout=10_000)
    text = " ".join(help_view.inner_text().split())
    assert heading in text and sentence in text, (heading, sentence, text[:400])
    page.evaluate(bui.JS_FRAME)
    shot = str(tmp_path / "help.png")
    page.screenshot(path=shot)
    assert_png(shot)
    keep(shot, f"help_panel_{HELP_NODE}_frontend_{'.'.join(map(str, version[:2]))}.png")
    bui.close_node_help(page)
    bui.blank_graph(page)


def test_template_browser_lists_every_template_with_its_thumbnail(ui, tmp_path):
    server, page, _, _, info, version = ui
    names = listed_templates(info)
    templates = server.get("/api/workflow_templates")
    assert sorted(templates.get(MODULE, [])) == names, templates
    thumbs: dict[str, int] = {}

    def seen(response):
        if response.url.endswith(".jpg"):
            thumbs[response.url.rsplit("/", 1)[-1]] = response.status
    page.on("response", seen)
    dialog = bui.open_templates(page, MODULE)
    for name in names:
        card = bui.template_card(dialog, name)
        card.scroll_into_view_if_needed()
        # 1.27 shows the .jpg itself, 1.49 a cached blob of it; the placeholder is a 224 px PNG
        page.wait_for_function("(c) => [...c.querySelectorAll('img')].some(i => i.complete && i.naturalWidth === 512)",
                               arg=card.element_handle(), timeout=20_000)
        assert thumbs.get(f"{name}.jpg") == 200, (name, thumbs)
        assert not [i for i in bui.card_images(card) if "default-template" in i["src"]], bui.card_images(card)
        assert name in card.inner_text(), (name, card.inner_text())  # the card's title is the file name
    shot = str(tmp_path / "card.png")
    bui.template_card(dialog, "svd_inbetween_gi").screenshot(path=shot)
    assert_png(shot, 5_000)
    keep(shot, f"template_card_svd_inbetween_full_frontend_{'.'.join(map(str, version[:2]))}.png")
    shot = str(tmp_path / "templates.png")
    dialog.locator("[data-testid^='template-workflow-']").first.evaluate(
        "c => { let p = c.parentElement; while (p && p.scrollHeight <= p.clientHeight) p = p.parentElement;"
        " if (p) p.scrollTop = 0; }")  # the first row of cards
    page.wait_for_timeout(500)
    page.screenshot(path=shot)
    keep(shot, f"templates_frontend_{'.'.join(map(str, version[:2]))}.png")
    bui.close_templates(page)
    page.remove_listener("response", seen)


def expected_missing_models(ui_json: dict) -> list[dict]:
    # the ui fixture's base holds the LPIPS backbone (comfy_job.prepare_base): that one is not missing
    return [m for n in ui_json["nodes"] for m in n.get("properties", {}).get("models", []) if m["directory"] != "lpips"]


def check_missing_models_shown(page, version, name: str, ui_json: dict) -> None:
    """Loading a template on a server without the real models: the frontend names each missing file, its
    folder (not "Unknown") and offers its source; no missing node, nothing else."""
    models = expected_missing_models(ui_json)
    shown = bui.wait_errors(page)
    details = bui.error_details(page)
    for m in models:
        assert m["name"] in details, f"{name}: {m['name']} not listed as missing: {details[:800]}"
        if version >= (1, 35):  # 1.27 lists names only
            assert m["directory"] in details, f"{name}: folder {m['directory']} not shown: {details[:800]}"
    assert "Unknown" not in details, f"{name}: a model folder shown as Unknown: {details[:800]}"
    text = "\n".join(shown) + details
    assert "missing node" not in text.lower() and "SVDInbetween" not in "\n".join(shown), f"{name}: {text[:800]}"
    bui.dismiss_errors(page)


def swap_in_tiny_models(page, api: dict, want: dict) -> dict:
    """Replace the checkpoint loader by the tiny test loader and set tiny sizes, as a user edits widgets."""
    ids = {}
    for nid in set(api) - set(want):  # the Wan text encoder loader: the tiny text nodes need none
        page.evaluate("(id) => app.graph.remove(app.graph.getNodeById(id))", int(nid))
    for nid, node in want.items():
        if node["class_type"] != api[nid]["class_type"]:
            ids[nid] = str(page.evaluate(JS_SWAP, [nid, node["class_type"]]))
    for nid, node in want.items():
        changed = {k: v for k, v in node["inputs"].items()
                   if not isinstance(v, list) and (nid in ids or api[nid]["inputs"].get(k) != v)}
        if changed:
            assert page.evaluate(JS_SET_WIDGETS, [ids.get(nid, nid), changed]) == [], (nid, changed)
    return ids


def run_and_check_video(server, page, base: str, name: str, queue=None) -> list[str]:
    """Queue the graph (or call `queue`), wait for the run; -> the paths of the videos it wrote."""
    from comfy_job import TINY, video_info
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                              timeout=60_000) as resp:
        if queue:
            queue()
        else:
            page.evaluate("() => app.queuePrompt(0)")  # its return value is false even on success (1.27)
    body = resp.value.json()
    assert "prompt_id" in body and not body.get("node_errors"), body
    entry = server.wait(body["prompt_id"], timeout=180)
    assert entry["status"]["status_str"] == "success", entry["status"]
    videos = [item for out in entry["outputs"].values() for item in out.get("images", [])]
    assert videos, entry["outputs"]
    paths = [os.path.join(base, "output", v.get("subfolder", ""), v["filename"]) for v in videos]
    for path in paths:
        got = video_info(path)
        assert got["width"] == TINY["width"] and got["height"] == TINY["height"], (name, got)
        assert got["frames"] >= TINY["frames"], (name, got)
    assert bui.errors(page) == [], f"{name}: error shown after the run"
    return paths


def assert_no_node_covers_another(page, name: str) -> None:
    rects = page.evaluate(JS_NODE_RECTS)
    overlaps = [(a[0], b[0]) for i, a in enumerate(rects) for b in rects[i + 1:]
                if min(a[3], b[3]) - max(a[1], b[1]) > 1 and min(a[4], b[4]) - max(a[2], b[2]) > 1]
    assert not overlaps, f"{name}: nodes overlap (ids) {overlaps}; rects {rects}"


# Nodes 2.0: {widget name: its text and the values of its fields} of each widget a node's DOM shows.
JS_VUE_WIDGET_TEXT = """(id) => { const root = document.querySelector(`[data-node-id="${id}"]`);
    if (!root) return null;
    return Object.fromEntries([...root.querySelectorAll('[data-widget-name]')].map(w => [
        w.getAttribute('data-widget-name'),
        [w.innerText, ...[...w.querySelectorAll('input, textarea')].map(i => i.value)].join('\\n')])); }"""


def _shows(text: str, value) -> bool:
    if isinstance(value, bool):
        return True  # a toggle: no text to read
    if isinstance(value, (int, float)):
        return any(abs(float(n.replace(",", "")) - value) <= 1e-6 * max(1.0, abs(value))
                   for n in re.findall(r"-?[\d,]*\.?\d+(?:e-?\d+)?", text))
    return str(value) in text


def _advanced(node_info: dict, widget: str) -> bool:
    for section in ("required", "optional"):
        spec = node_info.get("input", {}).get(section, {}).get(widget)
        if spec and len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("advanced"):
            return True
    return False


def assert_vue_widgets_show_their_values(page, name: str, ui_json: dict, info: dict) -> None:
    """Every widget of every node is drawn with the value the template saved (Nodes 2.0 renders them as DOM)."""
    from ui_format import read_widgets
    wrong = []
    for node in ui_json["nodes"]:
        shown = page.evaluate(JS_VUE_WIDGET_TEXT, node["id"])
        assert shown is not None, f"{name}: node {node['id']} not drawn as a Vue node"
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        values, _, _ = read_widgets(info[node["type"]], node.get("widgets_values"))
        for widget, value in values.items():
            if widget in linked or "." in widget:
                continue  # fed by a link; a dynamic combo's sub-widget is named differently in the DOM
            if widget not in shown and any(k.endswith("." + widget) for k in values):
                continue  # 0.33's SaveVideo: the hidden optional `codec` twin of `format.codec`
            if widget not in shown and _advanced(info[node["type"]], widget):
                continue  # an "advanced" input (UNETLoader's weight_dtype): Nodes 2.0 folds it away
            if widget not in shown or not _shows(shown[widget], value):
                wrong.append((node["id"], node["type"], widget, value, shown.get(widget)))
    assert not wrong, f"{name}: widgets not shown with their value: {wrong}"


def graph_templates(info: dict, version) -> list[str]:
    """Templates opened as node graphs: all of them, except the app on frontends with an app mode."""
    return [n for n in listed_templates(info) if not (n.endswith(".app") and version >= LINEAR_MODE)]


def test_shipped_workflows_load_from_template_browser_and_run(ui, tmp_path):
    from comfy_job import tiny_prompt
    from tiny_models import TINY_FILM

    server, page, base, weights, info, version = ui
    shots = tmp_path / "screenshots"
    shots.mkdir()
    thumbs_dir = os.environ.get("SVD_INBETWEEN_THUMBNAIL_DIR")
    for name in graph_templates(info, version):
        ui_json, api = load_workflow(UI_DIR, name), load_workflow(API_DIR, name)
        bui.open_template(page, MODULE, name)
        page.wait_for_function("(n) => app.graph.nodes.length === n", arg=len(ui_json["nodes"]), timeout=30_000)
        loaded = page.evaluate("() => app.graph.nodes.map(n => [String(n.id), n.type])")
        assert sorted(loaded) == sorted([str(n["id"]), n["type"]] for n in ui_json["nodes"]), name
        check_missing_models_shown(page, version, name, ui_json)
        page.wait_for_function("() => app.graph.nodes.filter(n => n.type === 'LoadImage')"
                               ".every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete))",
                               timeout=30_000)
        page.evaluate(bui.JS_CLEAR_ERROR_OUTLINES)
        page.evaluate(bui.JS_FRAME)
        page.wait_for_timeout(300)  # Vue nodes settle their size after the first frame
        assert_no_node_covers_another(page, name)
        if VUE_NODES:
            assert_vue_widgets_show_their_values(page, name, ui_json, info)
        page.screenshot(path=str(shots / f"{name}.png"))
        assert_png(str(shots / f"{name}.png"))
        keep(str(shots / f"{name}.png"), f"{name}_nodes2.0_frontend_{'.'.join(map(str, version[:2]))}.png"
             if VUE_NODES else f"{name}.png")
        if thumbs_dir:
            bui.thumbnail(page, str(shots / f"{name}_thumb.png"), os.path.join(thumbs_dir, f"{name}.jpg"))

        want = tiny_prompt(api, weights, TINY_FILM)
        ids = swap_in_tiny_models(page, api, want)
        expected = {ids.get(nid, nid): {"class_type": n["class_type"],
                                        "inputs": {k: [ids.get(v[0], v[0]), v[1]] if isinstance(v, list) else v
                                                   for k, v in n["inputs"].items()}}
                    for nid, n in api_as_host_reads(want, info).items()}
        assert page.evaluate(JS_PROMPT) == expected, f"{name}: the frontend's prompt differs from the API twin"
        run_and_check_video(server, page, base, name)


def test_app_template_opens_in_app_mode_and_runs(ui, tmp_path):
    """The `.app` template (extra.linearMode) opens as an app where the frontend has an app mode (1.35's
    linear mode, 1.49's App mode, whose template browser also lists it under the App filter): the graph
    is hidden, the start and end image are inputs under their labels, and the app's Run button makes
    the video. On 1.27 it is an ordinary graph, opened and run by the test above."""
    from comfy_job import tiny_prompt

    server, page, base, weights, info, version = ui
    apps = [n for n in workflow_names(UI_DIR) if n.endswith(".app")]
    assert apps == ["svd_inbetween.app"]
    dialog = bui.open_templates(page, MODULE)
    app_filter = dialog.locator("button", has_text="App")
    if version < APP_VIEW:
        assert app_filter.count() == 0, f"frontend {version} has an App filter: lower APP_VIEW"
    elif version >= APP_FLAG:
        # 1.58 lists a template under App only when the template index flags it `isApp`, which extension
        # templates never get: the filter shows none of ours (README: open svd_inbetween.app from the pack's list)
        app_filter.first.click()
        page.wait_for_timeout(1500)
        listed = dialog.evaluate("d => [...d.querySelectorAll('[data-testid^=\"template-workflow-\"]')]"
                                 ".map(c => c.getAttribute('data-testid'))")
        assert listed == [], f"frontend {version} lists extension apps under App again: {listed}"
        bui.close_templates(page)
        dialog = bui.open_templates(page, MODULE)
    else:
        app_filter.first.click()
        page.wait_for_function("(d) => d.querySelectorAll('[data-testid^=\"template-workflow-\"]').length === 1",
                               arg=dialog.element_handle(), timeout=10_000)
        listed = dialog.evaluate("d => [...d.querySelectorAll('[data-testid^=\"template-workflow-\"]')]"
                                 ".map(c => c.getAttribute('data-testid'))")
        assert listed == ["template-workflow-svd_inbetween.app"], listed
    if version < LINEAR_MODE:
        bui.close_templates(page)
        return
    ui_json = load_workflow(UI_DIR, apps[0])
    bui.template_card(dialog, apps[0]).click()
    dialog.wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => app.graph.nodes.length > 0", timeout=30_000)
    page.locator("canvas#graph-canvas").wait_for(state="hidden", timeout=15_000)  # the graph is hidden
    if version >= APP_VIEW:  # only the app's chosen inputs, under their labels; the missing models in the app
        labels = [t.strip() for t in page.locator("[data-testid='builder-widget-label']").all_inner_texts()]
        assert labels == ["Start frame", "End frame", "seed"], labels
        warning = page.locator("[data-testid='linear-validation-warning']")
        n = len(expected_missing_models(ui_json))  # 1.49: "2 errors"; 1.58: "2 issues found"
        assert f"{n} errors" in warning.inner_text() or f"{n} issues found" in warning.inner_text(), \
            warning.inner_text()
        run = page.locator("[data-testid='linear-run-button'] button").last
    else:  # 1.35: every widget, labelled; missing models in a dialog
        check_missing_models_shown(page, version, apps[0], ui_json)
        body = page.inner_text("body")
        assert "Start frame" in body and "End frame" in body, body[:800]
        run = page.locator("button[aria-label='Run']:visible").last
    shot = str(tmp_path / "app.png")
    page.evaluate(bui.JS_FRAME)
    page.screenshot(path=shot)
    assert_png(shot)
    keep(shot, f"svd_inbetween.app_frontend_{'.'.join(map(str, version[:2]))}.png")
    api = load_workflow(API_DIR, apps[0])
    swap_in_tiny_models(page, api, tiny_prompt(api, weights))
    run_and_check_video(server, page, base, apps[0], queue=run.click)
    thumbs_dir = os.environ.get("SVD_INBETWEEN_THUMBNAIL_DIR")
    if thumbs_dir and version >= APP_VIEW:  # the App card shows the app after a run: inputs, Run, the video
        page.wait_for_timeout(1500)
        # as a user with the model files sees it: without the (stale) missing-model warning of this test server
        page.evaluate("() => document.querySelectorAll('[data-testid=\"linear-validation-warning\"]')"
                      ".forEach(e => { e.style.display = 'none'; })")
        bui.crop_thumbnail(page, str(tmp_path / "app_thumb.png"), os.path.join(thumbs_dir, apps[0] + ".jpg"),
                           {"x": VIEWPORT["width"] - 760, "y": 40, "width": 760, "height": 760})
    if version >= APP_VIEW:
        page.locator("[data-testid='view-mode-toggle'] button").first.click()  # back to the node graph
    else:
        page.get_by_role("button", name="Open Workflow").click()
    page.locator("canvas#graph-canvas").wait_for(state="visible", timeout=10_000)


def test_error_surfaces_are_detected(ui):
    """The checks above can fail: a missing node type and a failing pack node do show in the UI."""
    server, page, _, _, _, _ = ui
    wf = load_workflow(UI_DIR, "svd_inbetween_gi")
    bogus = json.loads(json.dumps(wf))
    bogus["nodes"][0]["type"] = "SVDInbetweenNoSuchNode"
    page.evaluate("(g) => app.loadGraphData(g, true, true, 'bogus')", bogus)
    bui.wait_errors(page, 10_000)
    details = bui.error_details(page)
    assert "SVDInbetweenNoSuchNode" in details, details[:800]
    bui.dismiss_errors(page)
    assert bui.errors(page) == []

    page.evaluate("(g) => app.loadGraphData(g, true, true, 'bad_weights')", wf)
    bui.wait_errors(page, 10_000)  # the missing model files of the template
    bui.dismiss_errors(page)
    loader = next(n["id"] for n in wf["nodes"] if n["type"] == "ImageOnlyCheckpointLoader")
    page.evaluate(JS_SWAP, [loader, "SVDInbetweenTestTinyModels"])
    nid = next(n["id"] for n in wf["nodes"] if n["type"] == "SVDInbetweenLoadBackwardWeights")
    assert page.evaluate(JS_SET_WIDGETS, [nid, {"weights": "no_such_file.safetensors"}]) == []
    page.evaluate("() => app.queuePrompt(0)")
    # the loader passes the model on without its file; the sampler, in mode gi, stops before sampling, naming it
    bui.wait_errors(page, 60_000)
    shown = bui.error_details(page)
    assert "needs backward-motion weights" in shown and "no_such_file.safetensors" in shown, shown[:1500]
    bui.dismiss_errors(page)
    assert bui.errors(page) == []


BLUEPRINT = "Keyframes to Video (SVD Inbetween)"
# each blueprint: (the template it wraps, words of its name to search for, {blueprint input: image} as the template wires it)
BLUEPRINTS = {
    BLUEPRINT: ("svd_inbetween_gi", "keyframes to video", {"start_image": "start.png", "end_image": "end.png"}),
    "Keyframe Chain to Video (SVD Inbetween)": ("svd_inbetween_keyframe_chain", "keyframe chain to video", {
        "keyframe_1": "start.png", "keyframe_2": "end.png", "keyframe_3": "start.png"}),
}
BLUEPRINT_VIEW = (1, 49)  # the first tested frontend that lists a pack's subgraphs/ blueprints (0.33 serves them)
JS_SUBGRAPH_NODE = """(id) => { const n = app.graph.getNodeById(id);
    return {subgraph: !!(n.isSubgraphNode && n.isSubgraphNode()), name: n.subgraph?.name ?? null,
            inner: (n.subgraph?.nodes ?? []).map(m => [String(m.id), m.type]),
            widgets: (n.widgets || []).map(w => w.name), inputs: n.inputs.map(i => i.name)}; }"""
# The blueprint node between two LoadImage nodes and a SaveVideo, as a user wires it.
JS_WIRE_BLUEPRINT = """([id, prefix, images]) => {
    const g = app.graph, bp = g.getNodeById(id);
    const make = (t, pos, values) => { const n = LiteGraph.createNode(t); n.pos = pos; g.add(n);
        for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v; return n; };
    Object.entries(images).forEach(([input, image], i) => {
        const a = make('LoadImage', [bp.pos[0] - 380, bp.pos[1] + 380 * i], {image});
        a.connect(0, bp, bp.inputs.findIndex(s => s.name === input));
    });
    const s = make('SaveVideo', [bp.pos[0] + bp.size[0] + 60, bp.pos[1]], {filename_prefix: prefix});
    bp.connect(0, s, 0);
    g.setDirtyCanvas(true, true);
}"""


def blueprint_inputs(blueprint: str) -> dict[tuple[str, str], str]:
    """{(inner node id, input id): the blueprint input that drives it}: an input shows its shown name (the
    conditioning's video_frames is the blueprint's `frames`)."""
    with open(os.path.join(REPO, "subgraphs", blueprint + ".json")) as f:
        (sub,) = json.load(f)["definitions"]["subgraphs"]
    nodes = {n["id"]: n for n in sub["nodes"]}
    links = {link["id"]: link for link in sub["links"]}
    return {(str(links[lid]["target_id"]), nodes[links[lid]["target_id"]]["inputs"][links[lid]["target_slot"]]["name"]):
            entry["name"] for entry in sub["inputs"] for lid in entry["linkIds"]}


def decoded_frames(path: str):
    import av
    import numpy as np
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def blueprint_with_tiny_models(page, blueprint: str, weights: str) -> tuple[int, dict, dict, dict]:
    """The blueprint added from the node search onto a blank graph, wired to its images and a SaveVideo, the tiny
    models swapped in inside its subgraph and the template's tiny settings set as a user sets them (the exposed ones
    on the blueprint node) -> (its node id, what the page shows of it, the template's API twin, the tiny prompt)."""
    from comfy_job import tiny_prompt
    template, query, images = BLUEPRINTS[blueprint]
    bui.search_and_add(page, query, blueprint)
    page.wait_for_function("() => app.graph.nodes.length === 1", timeout=10_000)
    nid = page.evaluate("() => app.graph.nodes[0].id")
    got = page.evaluate(JS_SUBGRAPH_NODE, nid)
    api = load_workflow(API_DIR, template)
    inside = {k: v for k, v in api.items() if v["class_type"] not in ("LoadImage", "SaveVideo")}
    assert got["subgraph"] and got["name"] == blueprint, got
    # the frontend may renumber the nodes inside (1.58 does where an id is taken): match them by type, each unique
    assert sorted(t for _, t in got["inner"]) == sorted(v["class_type"] for v in inside.values()), got
    bid = {k: next(i for i, t in got["inner"] if t == v["class_type"]) for k, v in inside.items()}
    assert set(images) <= set(got["inputs"]), got
    assert {"mode", "seed", "steps", "cfg", "ckpt_name", "weights"} <= set(got["widgets"]), got

    page.evaluate(JS_WIRE_BLUEPRINT, [nid, "video/blueprint", images])
    want = tiny_prompt(api, weights)
    exposed = {key: name for key, name in blueprint_inputs(blueprint).items() if name in got["widgets"]}
    ids = {}
    for k, node in inside.items():  # the tiny loader replaces the checkpoint loader inside the subgraph
        if want[k]["class_type"] != node["class_type"]:
            ids[k] = str(page.evaluate(JS_SWAP, [bid[k], want[k]["class_type"], nid]))
    for k in inside:
        changed = {i: v for i, v in want[k]["inputs"].items()
                   if not isinstance(v, list) and (k in ids or api[k]["inputs"].get(i) != v)}
        outer = {i: v for i, v in changed.items() if (k, i) in exposed and k not in ids}
        inner = {i: v for i, v in changed.items() if i not in outer}
        outer = {exposed[k, i]: v for i, v in outer.items()}
        if outer:  # as a user sets them: on the blueprint node's own widgets
            assert page.evaluate(JS_SET_WIDGETS, [nid, outer]) == [], (k, outer)
        if inner:
            assert page.evaluate(JS_SET_WIDGETS, [ids.get(k, bid[k]), inner, nid]) == [], (k, inner)
    page.evaluate(bui.JS_FRAME)
    return nid, got, api, want


@pytest.mark.parametrize("blueprint", sorted(BLUEPRINTS))
def test_blueprint_from_node_library_runs_like_its_template(ui, tmp_path, blueprint):
    """0.33 serves subgraphs/*.json; the node library lists the blueprint, the node search adds it as one
    subgraph node holding the template's nodes; wired to its images and a SaveVideo, with the tiny models
    swapped in inside the subgraph, it makes the same frames as the template's API twin."""
    server, page, base, weights, info, version = ui
    if version < BLUEPRINT_VIEW:
        pytest.skip(f"frontend {version}: subgraph blueprints are tested from frontend 1.49 (ComfyUI 0.33) on")
    bui.blank_graph(page)
    library = bui.open_node_library(page, blueprint)
    if blueprint == BLUEPRINT:
        shot = str(tmp_path / "blueprint_library.png")
        page.screenshot(path=shot)
        assert_png(shot)
        keep(shot, f"blueprint_node_library_frontend_{'.'.join(map(str, version[:2]))}.png")
    bui.close_node_library(page, library)
    # the tiny steps are set on the blueprint node; its cfg stays 0, the template's mode's own (the template's 2.0)
    _, _, _, want = blueprint_with_tiny_models(page, blueprint, weights)
    shot = str(tmp_path / "blueprint_graph.png")
    page.screenshot(path=shot)
    assert_png(shot)
    (made,) = run_and_check_video(server, page, base, blueprint)
    entry = server.wait(server.queue(want), timeout=180)  # the template, over HTTP
    assert entry["status"]["status_str"] == "success", entry["status"]
    (v,) = [item for out in entry["outputs"].values() for item in out.get("images", [])]
    template_frames = decoded_frames(os.path.join(base, "output", v.get("subfolder", ""), v["filename"]))
    blueprint_frames = decoded_frames(made)
    assert blueprint_frames.shape == template_frames.shape
    assert (blueprint_frames == template_frames).all(), "the blueprint's frames differ from the template's"
    bui.blank_graph(page)


def _run_until_sampling(server, page, timeout_s: float = 120) -> tuple[dict, str]:
    """Queue the graph from the page and let it run until its sampler logged what it samples at (then interrupt
    it: the full step count is not needed to know what ran) or it ended -> (history entry, its log)."""
    import time
    start = len(server.log())
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                              timeout=60_000) as resp:
        page.evaluate("() => app.queuePrompt(0)")
    body = resp.value.json()
    assert "prompt_id" in body and not body.get("node_errors"), body
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        history = server.get(f"/history/{body['prompt_id']}")
        if body["prompt_id"] in history:
            return history[body["prompt_id"]], server.log()[start:]
        if re.search(r"SVDInbetween\w+: mode \w+, \d+ steps, cfg", server.log()[start:]):
            server.post("/interrupt", {"prompt_id": body["prompt_id"]})
        time.sleep(0.2)
    raise AssertionError(f"prompt {body['prompt_id']} did not end in {timeout_s} s")


@pytest.mark.parametrize("blueprint", sorted(BLUEPRINTS))
def test_blueprint_runs_every_mode_at_its_own_settings_with_and_without_the_weights_file(ui, blueprint):
    """Every mode picked on the blueprint node, as shipped (steps and cfg 0: the mode's own), runs at the mode's
    own steps and cfg; without the backward-weights file (the shipped name, absent here) every mode that does not
    use it runs, and the modes that do stop before sampling naming the file; with the file they run too, and the
    file is read. Frontend 1.49 only (one configuration: 16 queued runs)."""
    from svd_inbetween.attention_patch.modes import MODES, mode_of
    server, page, base, weights, info, version = ui
    if not BLUEPRINT_VIEW <= version < APP_FLAG:
        pytest.skip(f"frontend {version}: every mode of the blueprints is run on frontend 1.49 only")
    shipped = load_workflow(API_DIR, BLUEPRINTS[blueprint][0])
    (absent,) = {n["inputs"]["weights"] for n in shipped.values() if "weights" in n["inputs"]}
    assert not os.path.exists(os.path.join(base, "models", "svd_inbetween", absent))
    bui.blank_graph(page)
    nid, got, _, _ = blueprint_with_tiny_models(page, blueprint, weights)
    # the blueprint as shipped leaves steps and cfg to the mode (the tiny settings above set steps: undo that)
    assert page.evaluate(JS_SET_WIDGETS, [nid, {"steps": 0, "cfg": 0}]) == []
    for weights_file in (absent, weights):
        assert page.evaluate(JS_SET_WIDGETS, [nid, {"weights": weights_file}]) == []
        for mode in MODES:
            spec = mode_of(mode)
            assert page.evaluate(JS_SET_WIDGETS, [nid, {"mode": mode}]) == []
            prompt = page.evaluate(JS_PROMPT)
            (sampler,) = [n for n in prompt.values() if n["class_type"] in ("SVDInbetweenSampler", "SVDInbetweenChain")]
            assert (sampler["inputs"]["mode"], sampler["inputs"]["steps"], sampler["inputs"]["cfg"]) == (mode, 0, 0)
            entry, log = _run_until_sampling(server, page)
            if weights_file == absent and spec.finetuned:
                assert entry["status"]["status_str"] == "error", (mode, entry["status"])
                said = json.dumps(entry["status"]["messages"])
                assert "needs backward-motion weights" in said and absent in said, (mode, said[:1500])
                assert "steps, cfg" not in log, (mode, log[-1500:])
            else:
                assert f": mode {mode}, {spec.steps} steps, cfg {spec.cfg:g}" in log, (mode, weights_file, log[-2000:])
        if weights_file == absent:
            assert f"{absent!r} not in models/svd_inbetween/" in server.log()
    assert f"{weights}: absolute backward weights" in server.log()
    bui.blank_graph(page)
    # dismissed only now: on 1.49, bui.dismiss_errors after an error inside a subgraph node took that node off the
    # graph (cause not found), and the next mode could not be picked
    bui.dismiss_errors(page)
