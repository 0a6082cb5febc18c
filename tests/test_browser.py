"""Server tier: the pack as a ComfyUI user meets it, in the real frontend in headless Chromium.

Starts ComfyUI (main.py) with the pack and the tiny test loader, opens the web UI, and for
every UI-format workflow in workflows/: opens it from the template browser, checks that no
missing-node or error dialog shows, screenshots the graph, swaps in the tiny models in the
page, checks the prompt the frontend builds equals the API twin's tiny prompt, queues it and
waits for success. Also: every pack node is found by the node search box, and every input
of every pack node shows its tooltip when hovered.

Needs Debian `chromium` and Playwright for Python (.ci/run installs both). Screenshots land in
the test's tmp_path and, when SVD_INBETWEEN_SCREENSHOT_DIR is set, are copied there.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

from host import REPO

pytestmark = pytest.mark.server

HERE = os.path.dirname(os.path.abspath(__file__))
UI_DIR = os.path.join(REPO, "workflows")
API_DIR = os.path.join(UI_DIR, "api")
PACK_MODULE = "custom_nodes.svd_inbetween"
KNOWN_NODES = {"SVDInbetweenConditioning", "SVDInbetweenLoadBackwardWeights", "SVDInbetweenSampler",
               "SVDInbetweenGuider", "SVDInbetweenRecurrentEuler"}
VIEWPORT = {"width": 1280, "height": 800}
SCALE = 2  # HiDPI screenshots (2560x1600): node text stays readable when a wide graph is fit to the window
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Set before the page loads: skip the templates dialog, draw node text even zoomed out (readable
# screenshots), hide the minimap and the FPS box, show tooltips after 100 ms instead of 500.
UI_SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 1,
               "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False,
               "LiteGraph.Node.TooltipDelay": 100}

# Visible error surfaces: dialogs (missing nodes, prompt errors) and error toasts.
JS_ERRORS = """() => [...document.querySelectorAll('.p-dialog, .p-toast-message-error')]
    .filter(e => e.getClientRects().length && !e.classList.contains('invisible-dialog-root'))
    .map(e => e.innerText.trim().slice(0, 400))"""
JS_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
JS_SWAP = """([oldId, newType]) => {
    const g = app.graph, old = g.getNodeById(oldId), neu = LiteGraph.createNode(newType);
    neu.pos = [...old.pos];
    g.add(neu);
    const targets = [];
    old.outputs.forEach((out, i) => (out.links || []).forEach(id => {
        const l = g.links.get(id); targets.push([i, l.target_id, l.target_slot]); }));
    g.remove(old);
    for (const [i, tid, ts] of targets) neu.connect(i, g.getNodeById(tid), ts);
    return neu.id;
}"""
JS_SET_WIDGETS = """([nodeId, values]) => {
    const n = app.graph.getNodeById(nodeId), missing = [];
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


def ui_workflows() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(UI_DIR) if f.endswith(".json"))


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """(server, page, base, weights name, /object_info) with the UI open on a live server."""
    chromium = _chromium()
    sys.path.insert(0, HERE)
    from comfy_job import prepare_base
    from playwright.sync_api import sync_playwright
    from server_harness import ComfyServer

    base = str(tmp_path_factory.mktemp("comfy_base"))
    weights = prepare_base(base)
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
            page.evaluate(JS_FRAME)
            assert page.evaluate(JS_ERRORS) == [], "error shown on first load"
            yield server, page, base, weights, server.get("/object_info")
            assert not [e for e in console if "svd" in e.lower()], console
        finally:
            browser.close()


def pack_nodes(info: dict) -> dict:
    nodes = {k: v for k, v in info.items() if v.get("python_module") == PACK_MODULE}
    assert KNOWN_NODES <= set(nodes), KNOWN_NODES - set(nodes)
    return nodes


def blank_graph(page) -> None:
    page.keyboard.press("Escape")
    page.evaluate("() => { app.graph.clear(); app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];"
                  " app.canvas.setDirty(true, true); }")
    page.evaluate(JS_FRAME)


def open_search(page):
    """Double-click on empty canvas opens the node search box (retried: a busy page can drop it)."""
    box = page.locator("input[id^='comfy-vue-node-search-box-input']")
    for _ in range(3):
        page.mouse.click(600, 300)  # reset the canvas pointer state, then wait out the double-click window
        page.wait_for_timeout(500)
        page.mouse.dblclick(700, 450)
        try:
            box.wait_for(state="visible", timeout=5_000)
            return box
        except Exception:  # playwright TimeoutError
            page.keyboard.press("Escape")
    raise AssertionError("double-click on the empty canvas did not open the node search box (3 tries)")


def test_node_search_finds_every_pack_node(ui):
    server, page, _, _, info = ui
    for node_id, spec in sorted(pack_nodes(info).items()):
        blank_graph(page)
        words = spec["display_name"].split()
        query = " ".join(words[1:] or words).lower()
        query = query[:max(3, len(query) - 2)]  # part of the name, e.g. "inbetween recurrent eul"
        box = open_search(page)
        box.fill(query)
        option = page.locator(f"li.p-autocomplete-option[aria-label='{spec['display_name']}']")
        option.wait_for(state="visible", timeout=10_000)
        option.click()
        added = page.evaluate("() => app.graph.nodes.map(n => n.type)")
        assert added == [node_id], f"search {query!r} then click: graph has {added}, wanted {node_id}"
    blank_graph(page)


def test_every_input_shows_its_tooltip_on_hover(ui):
    server, page, _, _, info = ui
    read = 0
    for node_id, spec in sorted(pack_nodes(info).items()):
        blank_graph(page)
        nid = page.evaluate("(t) => { const n = LiteGraph.createNode(t); n.pos = [150, 120]; app.graph.add(n);"
                            " app.canvas.setDirty(true, true); return n.id; }", node_id)
        page.evaluate(JS_FRAME)
        for section in ("required", "optional"):
            for name, ispec in spec["input"].get(section, {}).items():
                want = ispec[1].get("tooltip") if len(ispec) > 1 else None
                assert want, f"{node_id}.{name} has no tooltip in /object_info"
                pos = page.evaluate(JS_INPUT_POS, [nid, name])
                assert pos, f"{node_id}.{name}: neither a widget nor a socket in the UI"
                page.mouse.move(5, 5)
                page.mouse.move(pos[0], pos[1], steps=2)
                tip = page.locator(".node-tooltip")
                tip.wait_for(state="visible", timeout=5_000)
                assert tip.inner_text().strip() == want.strip(), f"{node_id}.{name}"
                read += 1
    assert read >= 30  # 5 known nodes have 41 inputs
    page.mouse.move(5, 5)
    blank_graph(page)


def open_template(page, module: str, name: str) -> None:
    """The user's path: sidebar Templates -> Custom Nodes / <pack> -> the workflow's card."""
    page.click("button.templates-tab-button")
    dialog = page.locator(".p-dialog")
    dialog.get_by_text(module, exact=True).click()
    dialog.locator(f"[data-testid='template-workflow-{name}']").click()
    dialog.wait_for(state="hidden", timeout=30_000)


def wait_images(page) -> None:
    page.wait_for_function("() => app.graph.nodes.filter(n => n.type === 'LoadImage')"
                           ".every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete))",
                           timeout=30_000)
    page.evaluate("() => app.canvas.setDirty(true, true)")
    page.evaluate(JS_FRAME)


def test_shipped_workflows_load_from_template_browser_and_run(ui, tmp_path):
    sys.path.insert(0, HERE)
    from comfy_job import TINY, tiny_prompt, video_info

    server, page, base, weights, _ = ui
    names = ui_workflows()
    assert names, "no UI workflows in workflows/"
    templates = server.get("/api/workflow_templates")
    module = next((m for m, items in templates.items() if set(names) <= set(items)), None)
    assert module == "svd_inbetween", templates
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for name in names:
        with open(os.path.join(UI_DIR, name + ".json")) as f:
            ui_json = json.load(f)
        with open(os.path.join(API_DIR, name + ".json")) as f:
            api = json.load(f)
        open_template(page, module, name)
        loaded = page.evaluate("() => app.graph.nodes.map(n => [n.id, n.type]).sort((a, b) => a[0] - b[0])")
        assert loaded == sorted([n["id"], n["type"]] for n in ui_json["nodes"]), name
        wait_images(page)
        assert page.evaluate(JS_ERRORS) == [], f"{name}: error shown after loading"
        page.screenshot(path=str(shots / f"{name}.png"))

        # the tiny models and sizes, changed in the page the way a user edits widgets
        want = tiny_prompt(api, weights)
        ids = {}
        for nid, node in want.items():
            if node["class_type"] != api[nid]["class_type"]:
                ids[nid] = str(page.evaluate(JS_SWAP, [int(nid), node["class_type"]]))
        for nid, node in want.items():
            changed = {k: v for k, v in node["inputs"].items()
                       if not isinstance(v, list) and (nid in ids or api[nid]["inputs"].get(k) != v)}
            if changed:
                assert page.evaluate(JS_SET_WIDGETS, [int(ids.get(nid, nid)), changed]) == [], (name, nid)
        expected = {ids.get(nid, nid): {"class_type": n["class_type"],
                                        "inputs": {k: [ids.get(v[0], v[0]), v[1]] if isinstance(v, list) else v
                                                   for k, v in n["inputs"].items()}}
                    for nid, n in want.items()}
        assert page.evaluate(JS_PROMPT) == expected, f"{name}: the frontend's prompt differs from the API twin"

        with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as resp:
            page.evaluate("() => app.queuePrompt(0)")  # its return value is false even on success (1.27)
        body = resp.value.json()
        assert "prompt_id" in body and not body.get("node_errors"), body
        entry = server.wait(body["prompt_id"], timeout=120)
        assert entry["status"]["status_str"] == "success", entry["status"]
        videos = [item for out in entry["outputs"].values() for item in out.get("images", [])]
        assert videos, entry["outputs"]
        for v in videos:
            got = video_info(os.path.join(base, "output", v.get("subfolder", ""), v["filename"]))
            assert got["width"] == TINY["width"] and got["height"] == TINY["height"], (name, got)
            assert got["frames"] >= TINY["frames"], (name, got)
        assert page.evaluate(JS_ERRORS) == [], f"{name}: error shown after the run"

    for name in names:
        png = (shots / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name  # a drawn graph, not a blank page
    target = os.environ.get("SVD_INBETWEEN_SCREENSHOT_DIR")
    if target:
        os.makedirs(target, exist_ok=True)
        for name in names:
            shutil.copy(shots / f"{name}.png", os.path.join(target, f"{name}.png"))


def test_error_dialogs_are_detected(ui):
    """The checks above can fail: a missing node type and a failing pack node do show in the UI."""
    server, page, _, _, _ = ui
    with open(os.path.join(UI_DIR, ui_workflows()[0] + ".json")) as f:
        wf = json.load(f)
    bogus = json.loads(json.dumps(wf))
    bogus["nodes"][0]["type"] = "SVDInbetweenNoSuchNode"
    page.evaluate("(g) => app.loadGraphData(g, true, true, 'bogus')", bogus)
    page.wait_for_function(f"() => ({JS_ERRORS})().length > 0", timeout=10_000)
    assert any("SVDInbetweenNoSuchNode" in e for e in page.evaluate(JS_ERRORS))
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => ({JS_ERRORS})().length === 0", timeout=10_000)

    page.evaluate("(g) => app.loadGraphData(g, true, true, 'bad_weights')", wf)
    loader = next(n["id"] for n in wf["nodes"] if n["type"] == "ImageOnlyCheckpointLoader")
    page.evaluate(JS_SWAP, [loader, "SVDInbetweenTestTinyModels"])
    nid = next(n["id"] for n in wf["nodes"] if n["type"] == "SVDInbetweenLoadBackwardWeights")
    assert page.evaluate(JS_SET_WIDGETS, [nid, {"weights": "no_such_file.safetensors"}]) == []
    page.evaluate("() => app.queuePrompt(0)")
    # the loader's validate_inputs refuses the missing file when the prompt is queued
    page.wait_for_function(f"() => ({JS_ERRORS})().length > 0", timeout=60_000)
    shown = "\n".join(page.evaluate(JS_ERRORS))
    assert "SVDInbetweenLoadBackwardWeights" in shown and "no_such_file.safetensors" in shown, shown
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => ({JS_ERRORS})().length === 0", timeout=10_000)
