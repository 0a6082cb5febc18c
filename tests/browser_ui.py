"""What a user does in ComfyUI's web UI, for each frontend the pack supports (1.27, 1.35, 1.49).

Used by tests/test_browser.py. Each helper finds its way through the frontend's own UI
(sidebar buttons, dialogs, the selection toolbox) and knows where each version shows things:
1.27 shows errors in modal dialogs; 1.35 also in dialogs (missing nodes and models); 1.49 in an
error overlay ("N errors found") whose "View details" opens the errors tab of the right-hand
panel. Templates of custom packs sit under "Custom Nodes" (1.27) or "Extensions" (1.35, 1.49).
"""
from __future__ import annotations

import re

JS_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
# Visible error surfaces: modal dialogs (missing nodes/models, prompt errors; not the template
# browser or the node search), error toasts, 1.49's error overlay.
JS_ERRORS = """() => [...document.querySelectorAll(
        '.p-dialog, .p-toast-message-error, [data-testid="error-overlay"]')]
    .filter(e => e.getClientRects().length && !e.classList.contains('invisible-dialog-root')
                 && !e.querySelector('[data-testid="template-workflows-content"], [data-testid^="template-workflow-"]')
                 && !e.querySelector('input[aria-label="Add a node..."], input[id^="comfy-vue-node-search-box-input"]')
                 && !e.closest('.node-search-box-dialog-mask'))
    .map(e => e.innerText.trim().slice(0, 600))"""
# Close what JS_ERRORS sees: 1.49's overlay, toasts, dialogs (their close button), the right-hand panel.
JS_DISMISS = """() => {
    const visible = e => e && e.getClientRects().length;
    document.querySelectorAll('[data-testid="error-overlay-dismiss"], .p-toast-close-button')
        .forEach(b => visible(b) && b.click());
    document.querySelectorAll('.p-dialog').forEach(d => {
        if (!visible(d)) return;
        const close = d.querySelector('.p-dialog-header-actions button, button[aria-label="Close"]');
        if (close) close.click();
    });
    const panel = document.querySelector('[data-testid="properties-panel"]');
    if (visible(panel)) document.querySelector('button[aria-label="Toggle properties panel"]')?.click();
}"""
JS_FRONTEND_VERSION = "() => window.__COMFYUI_FRONTEND_VERSION__ || null"


def frontend_version(page) -> tuple[int, ...]:
    text = page.evaluate(JS_FRONTEND_VERSION)
    assert text, "the page does not say its frontend version (window.__COMFYUI_FRONTEND_VERSION__)"
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def errors(page) -> list[str]:
    return page.evaluate(JS_ERRORS)


def dismiss_errors(page) -> None:
    for _ in range(5):
        if not errors(page) and not page.locator("[data-testid='properties-panel']").is_visible():
            return
        page.evaluate(JS_DISMISS)
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not errors(page), f"could not dismiss: {errors(page)}"


def wait_errors(page, timeout_ms: int = 30_000) -> list[str]:
    page.wait_for_function(f"() => ({JS_ERRORS})().length > 0", timeout=timeout_ms)
    page.wait_for_timeout(500)  # let every surface of one event settle
    return errors(page)


def error_details(page) -> str:
    """The full error text: 1.49's errors panel (opened through "View details"), else the dialogs."""
    see = page.locator("[data-testid='error-overlay-see-errors']")
    if see.is_visible():
        see.click()
        panel = page.locator("[data-testid='properties-panel']")
        panel.wait_for(state="visible", timeout=10_000)
        page.wait_for_timeout(500)
        return panel.inner_text()
    return "\n".join(errors(page))


# ---------------------------------------------------------------- templates

def open_templates(page, module: str):
    """Sidebar Templates -> the pack's entry (under Custom Nodes or Extensions) -> its cards."""
    page.locator("button[aria-label='Templates'], button.templates-tab-button").first.click()
    dialog = page.locator("[role=dialog]").filter(has=page.get_by_text(module, exact=True)).last
    dialog.get_by_text(module, exact=True).first.click()
    dialog.locator("[data-testid^='template-workflow-']").first.wait_for(state="visible", timeout=30_000)
    return dialog


# the template browser, also while a filter shows no card (1.58's App filter on extension templates)
TEMPLATES_DIALOG = ("[role=dialog]:has([data-testid^='template-workflow-']), "
                    "[role=dialog]:has([data-testid='template-filter-bar'])")


def close_templates(page) -> None:
    """Escape closes the template browser on 1.27 and 1.49; 1.35 needs its close (x) button."""
    dialog = page.locator(TEMPLATES_DIALOG)
    if not dialog.count():
        return
    page.keyboard.press("Escape")
    try:
        dialog.first.wait_for(state="hidden", timeout=3_000)
    except Exception:  # playwright TimeoutError
        dialog.first.locator("button:has(i.pi-times), button[aria-label='Close']").first.click()
        dialog.first.wait_for(state="hidden", timeout=10_000)


def template_card(dialog, name: str):
    return dialog.locator(f"[data-testid='template-workflow-{name}']")


def open_template(page, module: str, name: str) -> None:
    dialog = open_templates(page, module)
    template_card(dialog, name).click()
    dialog.wait_for(state="hidden", timeout=30_000)


def card_images(card) -> list[dict]:
    return card.evaluate("c => [...c.querySelectorAll('img')].map(i => ({src: i.src, w: i.naturalWidth,"
                         " complete: i.complete}))")


# ---------------------------------------------------------------- canvas

def blank_graph(page) -> None:
    page.keyboard.press("Escape")
    page.evaluate("() => { app.graph.clear(); app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];"
                  " app.canvas.setDirty(true, true); }")
    page.evaluate(JS_FRAME)


def add_node(page, node_type: str, pos=(300, 250)) -> int:
    nid = page.evaluate("([t, p]) => { const n = LiteGraph.createNode(t); n.pos = p; app.graph.add(n);"
                        " app.canvas.setDirty(true, true); return n.id; }", [node_type, list(pos)])
    page.evaluate(JS_FRAME)
    return nid


def click_title(page, nid: int) -> None:
    """Select a node the way a user does: click its title bar."""
    p = page.evaluate("(id) => { const n = app.graph.getNodeById(id); return app.canvasPosToClientPos("
                      "[n.pos[0] + 40, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]); }", nid)
    page.mouse.click(p[0], p[1])
    page.evaluate(JS_FRAME)


# ---------------------------------------------------------------- node search

SEARCH_INPUT = ("input[id^='comfy-vue-node-search-box-input'], input[aria-label='Add a node...'], "
                "input[placeholder='Search Nodes...']")
# one search result: 1.27/1.35 list items (aria-label = display name), 1.49 result rows
JS_PICK_RESULT = """(name) => {
    const items = [...document.querySelectorAll('li.p-autocomplete-option, [data-testid="result-item"]')]
        .filter(e => e.getClientRects().length);
    const hit = items.find(e => e.getAttribute('aria-label') === name
        || (e.innerText || '').split('\\n').map(s => s.trim()).filter(Boolean)[0] === name);
    if (!hit) return items.map(e => (e.getAttribute('aria-label') || e.innerText).split('\\n')[0]).slice(0, 8);
    hit.scrollIntoView({block: 'center'});
    hit.click();
    return true;
}"""


SEARCH_SPOTS = ((700, 450), (560, 520), (820, 380), (640, 600), (700, 450))


def open_search(page):
    """Double-click on empty canvas opens the node search box (retried, at other empty spots too: a busy page can
    drop a double-click, and a toast or panel of a newly started frontend can sit on one spot)."""
    box = page.locator(SEARCH_INPUT).first
    for x, y in SEARCH_SPOTS:
        page.mouse.click(x, y - 150)  # reset the canvas pointer state, then wait out the double-click window
        page.wait_for_timeout(500)
        page.mouse.dblclick(x, y)
        try:
            box.wait_for(state="visible", timeout=5_000)
            return box
        except Exception:  # playwright TimeoutError
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    raise AssertionError(f"double-click on the empty canvas did not open the node search box ({len(SEARCH_SPOTS)} "
                         "tries)")


def search_and_add(page, query: str, display_name: str) -> None:
    box = open_search(page)
    box.fill(query)
    deadline_ms, shown = 10_000, None
    while deadline_ms > 0:
        shown = page.evaluate(JS_PICK_RESULT, display_name)
        if shown is True:
            return
        page.wait_for_timeout(250)
        deadline_ms -= 250
    raise AssertionError(f"node search {query!r}: no result named {display_name!r}; first results: {shown}")


# ---------------------------------------------------------------- node library (sidebar)

NODE_LIBRARY_BUTTON = "button.node-library-tab-button, button[aria-label^='Node Library']"


def open_node_library(page, query: str):
    """Sidebar Nodes -> its search box -> `query`; waits for an entry named `query` (a node or blueprint)."""
    page.locator(NODE_LIBRARY_BUTTON).first.click()
    # 1.58: "Search Nodes..."; 1.49: "Search..."
    box = page.locator("input[placeholder^='Search Nodes']:visible, input[placeholder^='Search nodes']:visible, "
                       "input[placeholder='Search...']:visible").first
    box.wait_for(state="visible", timeout=10_000)
    box.fill(query)
    entry = page.get_by_text(query, exact=True).locator("visible=true").first
    entry.wait_for(state="visible", timeout=15_000)
    page.wait_for_timeout(300)
    return entry


def close_node_library(page, entry) -> None:
    page.locator(NODE_LIBRARY_BUTTON).first.click()
    entry.wait_for(state="hidden", timeout=10_000)


# ---------------------------------------------------------------- node help

# the rendered help page: `.markdown-content` up to 1.49; 1.58 renders it in the right panel's Info tab
HELP_VIEW = ".markdown-content, .node-help-content .comfy-markdown-content"


def open_node_help(page, nid: int):
    """Select the node, then the selection toolbox's info button: the help page (Markdown) of the node."""
    click_title(page, nid)
    page.locator("[data-testid='info-button']").first.click()
    help_view = page.locator(HELP_VIEW).first
    help_view.wait_for(state="visible", timeout=15_000)
    return help_view


def close_node_help(page) -> None:
    """1.49 shows help in the right-hand panel (its toggle closes it); 1.27/1.35 in the Node Library
    sidebar (its sidebar button closes it)."""
    if page.locator("[data-testid='properties-panel']").is_visible():
        page.locator("button[aria-label='Toggle properties panel']").click()
    elif page.locator(".node-help-content").is_visible():
        page.locator("button[aria-label^='Node Library']").first.click()
    page.locator(HELP_VIEW).first.wait_for(state="hidden", timeout=10_000)


def markdown_heading_and_sentence(text: str) -> tuple[str, str]:
    """The first `# heading` of a help page and the first words of its first paragraph, as rendered text."""
    heading = re.search(r"^#\s+(.+?)\s*$", text, re.M).group(1).strip()
    body = text[text.index(heading) + len(heading):]
    para = next(p for p in re.split(r"\n\s*\n", body) if p.strip() and not p.lstrip().startswith(("#", "```", "|",
                                                                                                    "<", "!", "-")))
    plain = re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", para)
    return heading, " ".join(plain.split()[:6])


# ---------------------------------------------------------------- thumbnails

# The graph as a user with the model files sees it: no missing-model outline on the loaders.
JS_CLEAR_ERROR_OUTLINES = """() => { app.graph.nodes.forEach(n => { n.has_errors = false; });
    app.canvas.setDirty(true, true); }"""
# Fit the pack's nodes but the weights loader (with a margin) into a square in the middle of the window;
# returns the square in page px.
JS_FRAME_PACK_NODES = """(side) => {
    let nodes = app.graph.nodes.filter(n => n.type.startsWith('SVDInbetween')
                                            && n.type !== 'SVDInbetweenLoadBackwardWeights');
    // a template without pack nodes (wan_flf, the native Wan baseline): its Wan conditioning and sampler
    if (!nodes.length) nodes = app.graph.nodes.filter(n => n.type.startsWith('Wan') || n.type === 'KSampler');
    const th = LiteGraph.NODE_TITLE_HEIGHT;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of nodes) {
        x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const pad = 30, w = x1 - x0 + 2 * pad, h = y1 - y0 + 2 * pad;
    const scale = side / Math.max(w, h), cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const rect = app.canvas.canvas.getBoundingClientRect();
    const sx = window.innerWidth / 2 - rect.left, sy = window.innerHeight / 2 - rect.top;
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [sx / scale - cx, sy / scale - cy];
    app.canvas.setDirty(true, true);
    return {x: window.innerWidth / 2 - side / 2, y: window.innerHeight / 2 - side / 2, width: side, height: side};
}"""


def crop_thumbnail(page, png_path: str, jpg_path: str, clip: dict, size: int = 512) -> None:
    """A square screenshot of part of the page, saved as a template's JPEG thumbnail."""
    from PIL import Image
    page.evaluate(JS_FRAME)
    page.screenshot(path=png_path, clip=clip)
    with Image.open(png_path) as im:
        im.convert("RGB").resize((size, size), Image.LANCZOS).save(jpg_path, "JPEG", quality=88, optimize=True)


def thumbnail(page, png_path: str, jpg_path: str) -> None:
    """The loaded template around the pack's nodes."""
    page.evaluate(JS_CLEAR_ERROR_OUTLINES)
    crop_thumbnail(page, png_path, jpg_path, page.evaluate(JS_FRAME_PACK_NODES, 640))
