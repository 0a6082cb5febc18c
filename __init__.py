"""Generative Inbetweening for ComfyUI: SVD forward from the start frame, backward from the end frame.

ComfyUI calls `comfy_entrypoint`. Importing this package outside ComfyUI (tests,
the `svd-inbetween` command) pulls in no ComfyUI module.
"""
from __future__ import annotations

__version__ = "0.2.0"

# Node help pages: the frontend shows web/docs/<NodeId>.md (served at /extensions/<pack folder>/docs/).
WEB_DIRECTORY = "./web"


def register_model_folder() -> None:
    import os

    import folder_paths

    from .nodes.common import MODEL_FOLDER
    if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    paths, _ = folder_paths.folder_names_and_paths[MODEL_FOLDER]
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, {".safetensors"})


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
