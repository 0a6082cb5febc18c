"""Real ComfyUI in this process: load it from COMFYUI_PATH with this pack, execute API prompts.

ComfyUI keeps global state (folders, node registry, loaded models), so one process
hosts one session; tests run it in a subprocess.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import uuid
from dataclasses import dataclass

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger(__name__)


class ComfyUINotFound(RuntimeError):
    pass


class PromptFailed(RuntimeError):
    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def comfyui_path(path: str | None = None) -> str:
    path = os.path.expanduser(path or os.environ.get("COMFYUI_PATH", "~/ComfyUI"))
    if not os.path.isfile(os.path.join(path, "comfy", "model_patcher.py")):
        raise ComfyUINotFound(f"no ComfyUI checkout at {path}; pass --comfyui or set COMFYUI_PATH")
    return os.path.abspath(path)


def prepare_comfyui(path: str | None = None, cpu: bool = False) -> str:
    """Make the ComfyUI checkout importable and set its CPU flag (before model_management loads); its root."""
    root = comfyui_path(path)
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args
    if cpu:
        comfy.cli_args.args.cpu = True
    return root


class _Server:
    """The parts of PromptServer that PromptExecutor talks to."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass  # progress and status events; the executor keeps the status messages itself

    def send_progress_text(self, text, node_id, sid=None):
        pass


@dataclass
class Result:
    prompt_id: str
    outputs: dict


def _use_base_directory(base: str) -> None:
    """Point input/output/temp and every model folder at `base` (as main.py --base-directory does)."""
    import folder_paths
    folder_paths.set_input_directory(os.path.join(base, "input"))
    folder_paths.set_output_directory(os.path.join(base, "output"))
    folder_paths.set_temp_directory(os.path.join(base, "temp"))
    folder_paths.models_dir = os.path.join(base, "models")
    for name in list(folder_paths.folder_names_and_paths):
        if name not in ("custom_nodes",):
            folder_paths.add_model_folder_path(name, os.path.join(base, "models", name), is_default=True)


def new_prompt_executor(execution, server):
    """A PromptExecutor with the CLASSIC cache and no RAM-pressure eviction, on every host.

    0.3.64 takes no cache arguments; 0.8 reads cache_args["lru"/"ram"] and 0.33 also
    cache_args["ram_inactive"] (main.py passes 0 for each unless --cache-ram is given).
    """
    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC)


class ComfySession:
    def __init__(self, comfyui: str | None = None, base_directory: str | None = None, cpu: bool = False,
                 extra_custom_nodes: tuple[str, ...] = ()):
        prepare_comfyui(comfyui, cpu)
        import comfy.cli_args
        if base_directory:
            comfy.cli_args.args.base_directory = os.path.abspath(base_directory)
        import utils.extra_config  # noqa: F401  (must precede `nodes`)
        import execution
        import nodes
        if base_directory:
            _use_base_directory(os.path.abspath(base_directory))
        self._execution = execution
        asyncio.run(self._load(nodes, extra_custom_nodes))
        self.server = _Server()
        self.executor = new_prompt_executor(execution, self.server)

    @staticmethod
    async def _load(nodes, extra):
        await nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
        for path in (PACK_DIR, *extra):
            if not await nodes.load_custom_node(path):
                raise RuntimeError(f"ComfyUI could not load the custom node pack at {path} (see the log above)")

    def run(self, prompt: dict) -> Result:
        """Validate and execute an API-format prompt; raise PromptFailed with ComfyUI's errors."""
        execution = self._execution
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise PromptFailed(f"prompt failed validation: {valid[1]}; {valid[3]}", {"error": valid[1], "node_errors": valid[3]})
        self.executor.execute(prompt, prompt_id, {}, valid[2])
        if not self.executor.success:
            errors = [d for e, d in self.executor.status_messages if e in ("execution_error", "execution_interrupted")]
            detail = errors[-1] if errors else {}
            raise PromptFailed(f"{detail.get('node_type', '?')} failed: {detail.get('exception_message', detail)}", detail)
        return Result(prompt_id, self.executor.history_result["outputs"])

    def node_output(self, node_id: str):
        """The cached Python outputs of a node from the last run (e.g. a LATENT dict)."""
        entry = self.executor.caches.outputs.get(node_id)
        if inspect.isawaitable(entry):  # 0.33's caches are async
            entry = asyncio.run(entry)
        return entry.outputs if hasattr(entry, "outputs") else entry
