"""Which of the pack's templates a host lists: only those whose every node the host has.

Every ComfyUI (0.3.64, 0.8, 0.33: app/custom_node_manager.py) lists each `custom_nodes/<pack>/workflows/*.json`
at GET /workflow_templates (and /api/workflow_templates), whatever nodes the file needs, and serves the folder
at /api/workflow_templates/<pack>/. svd_inbetween_film ends with the host's own FILM node (FrameInterpolate,
ComfyUI 0.33+): an older host would show it as a broken template. So the pack wraps that one listing with an
aiohttp middleware that takes out, from this pack's entry only, the templates naming a node the host does not
have. On a host that has them all the listing is the host's, untouched.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Container

log = logging.getLogger(__name__)

PACK_DIR = os.path.dirname(os.path.abspath(__file__))
WORKFLOWS = os.path.join(PACK_DIR, "workflows")
LISTING_PATHS = frozenset({"/workflow_templates", "/api/workflow_templates"})
# Templates renamed after the mode they run (issue 28): old name -> new name. The one alias table: `svd-inbetween
# run/eval/serve-check --workflow` take an old name or an old workflows/api path and load the new file; a user's
# own copy of an old template runs as it is (node ids and inputs unchanged, tests/data/shipped_before).
RENAMED = {"svd_inbetween_full": "svd_inbetween_gi",
           "svd_inbetween_custom_advanced": "svd_inbetween_gi_custom_advanced",
           "svd_inbetween_vibid_custom_advanced": "svd_inbetween_vibid_gi_custom_advanced"}


def template_nodes(path: str) -> set[str]:
    """Node types a UI-format workflow uses, its subgraph definitions' included (a subgraph node is no node type)."""
    with open(path) as f:
        ui = json.load(f)
    subgraphs = ui.get("definitions", {}).get("subgraphs", [])
    ids = {s["id"] for s in subgraphs}
    return {n["type"] for g in [ui, *subgraphs] for n in g.get("nodes", [])} - ids


def unavailable_templates(known: Container[str], folder: str = WORKFLOWS) -> list[str]:
    """Names (file stems, as the host lists them) of the templates in `folder` that use a node not in `known`."""
    return [f[:-len(".json")] for f in sorted(os.listdir(folder))
            if f.endswith(".json") and any(t not in known for t in template_nodes(os.path.join(folder, f)))]


def filter_listing(listing: dict, pack_folder: str, hidden: Container[str]) -> dict:
    """The host's {pack folder: [template names]} without this pack's `hidden` templates (unavailable_templates)."""
    if pack_folder not in listing or not any(n in hidden for n in listing[pack_folder]):
        return listing
    return {**listing, pack_folder: [n for n in listing[pack_folder] if n not in hidden]}


def install(server, pack_folder: str | None = None) -> bool:
    """Wrap `server`'s (a PromptServer) template listing; False where there is no server or it already started."""
    from aiohttp import web

    app = getattr(server, "app", None)
    if app is None:
        return False
    pack_folder = pack_folder or os.path.basename(os.path.dirname(os.path.abspath(__file__)))

    hidden: list[set[str]] = []  # this pack's unrunnable templates, worked out once: the nodes are loaded by then

    @web.middleware
    async def hide_unavailable_templates(request, handler):
        response = await handler(request)
        if request.method != "GET" or request.path not in LISTING_PATHS or response.status != 200 \
                or not isinstance(response, web.Response) or response.body is None:
            return response
        import nodes
        try:
            listing = json.loads(response.body)
            if not hidden:
                hidden.append(set(unavailable_templates(nodes.NODE_CLASS_MAPPINGS)))
            filtered = filter_listing(listing, pack_folder, hidden[0]) if isinstance(listing, dict) else listing
        except (ValueError, TypeError, OSError) as e:  # a listing of another shape: leave it as the host made it
            log.warning("svd_inbetween: template listing left unfiltered (%s)", e)
            return response
        return response if filtered is listing else web.json_response(filtered)

    try:
        app.middlewares.append(hide_unavailable_templates)
    except RuntimeError:  # the app is frozen: the server started before the pack loaded
        log.warning("svd_inbetween: the server already started; templates needing absent nodes stay listed")
        return False
    return True
