"""Bringing up real ComfyUI in-process for tests (COMFYUI_PATH, default ~/ComfyUI)."""
from __future__ import annotations

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_PATH = os.path.expanduser(os.environ.get("COMFYUI_PATH", "~/ComfyUI"))
# The pack's node IDs (public: workflows store them).
NODE_IDS = frozenset({"SVDInbetweenConditioning", "SVDInbetweenLoadBackwardWeights", "SVDInbetweenSampler",
                      "SVDInbetweenGuider", "SVDInbetweenRecurrentEuler", "SVDInbetweenViBiDSampler",
                      "SVDInbetweenMPDSampler", "SVDInbetweenChain"})


def comfyui_available() -> bool:
    return os.path.isfile(os.path.join(COMFYUI_PATH, "comfy", "model_patcher.py"))


def import_pack():
    """The repo root as package `svd_inbetween`, whatever the checkout folder is called."""
    if "svd_inbetween" in sys.modules:
        return sys.modules["svd_inbetween"]
    spec = importlib.util.spec_from_file_location("svd_inbetween", os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules["svd_inbetween"] = module
    spec.loader.exec_module(module)
    return module


def setup_comfy() -> None:
    """Make ComfyUI importable and CPU-only (must run before comfy.model_management is imported)."""
    import_pack()
    from svd_inbetween.client.comfy_session import prepare_comfyui
    prepare_comfyui(COMFYUI_PATH, cpu=True)
    import utils.extra_config  # noqa: F401  (before `nodes`, see COMFYUI_NOTES)
    # ComfyUI's nodes.py now, while its root leads sys.path: pytest later puts the checkout's own folder
    # first when that folder's name is no Python identifier (a clone in "ci-main"), and a first `import
    # nodes` after that would find this pack's nodes/ package.
    import nodes  # noqa: F401


def load_host_nodes() -> dict:
    """ComfyUI's extra nodes and this pack loaded in this process (once); returns NODE_CLASS_MAPPINGS."""
    import asyncio

    import nodes
    if "SVDInbetweenSampler" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        assert asyncio.run(nodes.load_custom_node(REPO))
    return nodes.NODE_CLASS_MAPPINGS
