"""Generative Inbetweening for ComfyUI: SVD forward from the start frame, backward from the end frame.

ComfyUI calls `comfy_entrypoint`. Importing this package outside ComfyUI (tests,
the `svd-inbetween` command) pulls in no ComfyUI module.
"""
from __future__ import annotations

__version__ = "0.2.0"

# Node help pages: the frontend shows web/docs/<NodeId>.md (served at /extensions/<pack folder>/docs/).
WEB_DIRECTORY = "./web"


def register_model_folder() -> None:
    """models/svd_inbetween (backward weights, safetensors) and models/lpips (the LPIPS backbone Wan Anchor Frame
    reads: torchvision's ImageNet file, loaded with weights_only)."""
    import os

    import folder_paths

    from .nodes.common import LPIPS_FOLDER, MODEL_FOLDER
    for folder, exts in ((MODEL_FOLDER, {".safetensors"}), (LPIPS_FOLDER, {".pth", ".safetensors"})):
        if folder not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
        paths, _ = folder_paths.folder_names_and_paths[folder]
        folder_paths.folder_names_and_paths[folder] = (paths, exts)


def _hide_templates_this_host_cannot_run() -> None:
    """svd_inbetween_film needs the host's FrameInterpolate (0.33+): see templates.py."""
    import sys
    # only the running server has one (in-process runs load nodes without it); never import it here
    server = getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)
    if server is not None:
        from .templates import install
        install(server)


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import node_list

    register_model_folder()
    _hide_templates_this_host_cannot_run()

    class SVDInbetweenExtension(ComfyExtension):
        async def get_node_list(self):
            return node_list()

    return SVDInbetweenExtension()
