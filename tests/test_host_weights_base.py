"""Host: the authors' transplant set up in the UI (SVDInbetweenLoadBackwardWeights.base_checkpoint) on tiny models.

The release is a tiny diffusers UNet fine-tuned from a tiny "14-frame" SVD (`tiny.model`);
the model sampled with is another tiny SVD (`xt`, other random weights), as SVD-XT is.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
from safetensors.torch import save_file

from test_host_weights import held, own_q
from test_weights_convert import unet_tensors, write_official

pytestmark = pytest.mark.host

NODE = "SVDInbetweenLoadBackwardWeights"
RELEASE = "svd_reverse_motion_with_attnflip"
RELEASE_FILE = f"{RELEASE}/unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def fresh_cache():
    from svd_inbetween.weights.cache import MEMORY
    MEMORY.clear()
    yield
    MEMORY.clear()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """models/svd_inbetween and models/checkpoints of a fake ComfyUI, registered with folder_paths."""
    import folder_paths
    from svd_inbetween.nodes.common import MODEL_FOLDER
    ours, ckpts = tmp_path / "models" / MODEL_FOLDER, tmp_path / "models" / "checkpoints"
    ours.mkdir(parents=True)
    ckpts.mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, MODEL_FOLDER, ([str(ours)], {".safetensors"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(ckpts)], {".safetensors", ".ckpt"}))
    return ours, ckpts


@pytest.fixture(scope="module")
def xt():
    import tiny_models as tm
    return tm.tiny_svd_model(seed=7)


def _layers(model):
    from svd_inbetween.weights.apply import model_layers
    return model_layers(model)


def base_pairs(model) -> dict:
    from svd_inbetween.weights.apply import model_base_weights
    return {p: (wv.detach().clone(), wo.detach().clone()) for p, (wv, wo) in model_base_weights(model).items()}


def finetune_of(model, seed: int = 3) -> dict:
    """W' = 0.9 W + noise: like weight decay plus training, so W' - W is not exact in fp32 everywhere."""
    g = torch.Generator().manual_seed(seed)
    return {p: tuple(0.9 * w + 0.01 * torch.randn(w.shape, generator=g) for w in pair)
            for p, pair in base_pairs(model).items()}


def setup_release(tiny, folders, base_q=None) -> dict:
    """The tiny official release in models/svd_inbetween/ and the tiny 14-frame base in models/checkpoints/."""
    ours, ckpts = folders
    tuned = finetune_of(tiny.model)
    write_official(ours / RELEASE, _layers(tiny.model), tuned, q=own_q(tiny.model))
    save_file(unet_tensors(_layers(tiny.model), base_pairs(tiny.model), scheme="comfyui_checkpoint",
                           q=base_q or own_q(tiny.model)), str(ckpts / "svd.safetensors"))
    return tuned


def node(model, weights, strength=1.0, **kw):
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    return SVDInbetweenLoadBackwardWeights.execute(model, weights, strength, **kw).args[0]


def _name(file: str) -> str:
    """A release's folder name for its unet/diffusion_pytorch_model.safetensors, else the file name."""
    if file.endswith("diffusion_pytorch_model.safetensors"):
        return os.path.basename(os.path.dirname(os.path.dirname(file)))
    return os.path.basename(file)


class Reads:
    """Counts the tensors read from each file through safe_open (the only way weights are read)."""

    def __init__(self, monkeypatch):
        from svd_inbetween.weights import format as format_mod
        from svd_inbetween.weights import source as source_mod
        self.keys: dict[str, list[str]] = {}
        counter = self
        real = source_mod.safe_open

        class Counting:
            def __init__(self, file, *a, **k):
                self.file, self.f = _name(file), real(file, *a, **k)

            def __enter__(self):
                self.f.__enter__()
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

            def keys(self):
                return self.f.keys()

            def get_tensor(self, key):
                counter.keys.setdefault(self.file, []).append(key)
                return self.f.get_tensor(key)

        monkeypatch.setattr(source_mod, "safe_open", Counting)
        monkeypatch.setattr(format_mod, "safe_open", Counting)

    def count(self, name: str, suffix: str = "") -> int:
        return sum(k.endswith(suffix) for k in self.keys.get(name, []))

    def reset(self) -> None:
        self.keys.clear()


def test_schema_offers_base_checkpoint_default_none_and_the_checkpoints(folders):
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    (folders[1] / "svd.safetensors").write_bytes(b"")
    schema = SVDInbetweenLoadBackwardWeights.define_schema()
    base = next(i for i in schema.inputs if i.id == "base_checkpoint")
    assert base.optional and base.default == "none"
    assert base.options[0] == "none" and "svd.safetensors" in base.options
    save = next(i for i in schema.inputs if i.id == "save_transplant")
    assert save.optional and save.default is False


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_ui_transplant_equals_the_converter_delta_file_exactly(tiny, xt, folders, strength):
    from svd_inbetween.cli import main as cli
    from svd_inbetween.weights.apply import model_base_weights
    ours, ckpts = folders
    tuned = setup_release(tiny, folders)
    # the CLI's way: convert once with --base, pick the delta file
    assert cli(["convert", str(ours / RELEASE), "-o", str(ours / "cli_delta.safetensors"),
                "--base", str(ckpts / "svd.safetensors")]) == 0
    by_cli = held(node(xt, "cli_delta.safetensors", strength))
    # the UI's way: the official file and the base picked in the node
    by_ui = held(node(xt, RELEASE_FILE, strength, base_checkpoint="svd.safetensors"))
    assert set(by_ui) == set(by_cli) and len(by_ui) == 16
    worst = 0.0
    for p in by_cli:
        for a, b in zip(by_ui[p], by_cli[p]):
            worst = max(worst, (a - b).abs().max().item())
            assert torch.equal(a, b), p
    assert worst == 0.0
    # and it is the authors' transplant: W_xt + strength * (W' - W_14)
    base, own = base_pairs(tiny.model), model_base_weights(xt)
    for p, (wv, wo) in own.items():
        for got, w, t, b in zip(by_ui[p], (wv, wo), tuned[p], base[p]):
            delta = t.float() - b.float()
            want = w.float() + delta if strength == 1.0 else w.float() + strength * delta
            assert torch.equal(got, want), p
    # on the base itself the transplant gives back the fine-tune (within fp32 rounding of W' - W + W)
    on_base = held(node(tiny.model, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors"))
    err = max((on_base[p][i] - tuned[p][i]).abs().max().item() for p in tuned for i in (0, 1))
    assert err <= 4 * torch.finfo(torch.float32).eps


def test_only_the_layer_tensors_are_read_and_a_second_run_reads_nothing(tiny, xt, folders, monkeypatch):
    setup_release(tiny, folders)
    reads = Reads(monkeypatch)
    first = held(node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors"))
    for name in (RELEASE, "svd.safetensors"):
        # the 32 trained tensors, plus the 16 untrained to_q of the base check; nothing else
        assert reads.count(name, ".to_v.weight") == 16 and reads.count(name, ".to_out.0.weight") == 16, name
        assert reads.count(name, ".to_q.weight") == 16 and reads.count(name) == 48, name
    reads.reset()
    # another strength, another model, same files: from memory
    node(xt, RELEASE_FILE, 0.5, base_checkpoint="svd.safetensors")
    again = held(node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors"))
    node(tiny.model, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    assert reads.keys == {}
    assert all(torch.equal(a, b) for p in first for a, b in zip(first[p], again[p]))
    # a replaced base makes another delta: read again
    base = folders[1] / "svd.safetensors"
    os.utime(base, ns=(base.stat().st_atime_ns, base.stat().st_mtime_ns + 10**9))
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    assert reads.count("svd.safetensors") == 48 and reads.count(RELEASE) == 48


def test_saved_transplant_is_used_after_a_restart_and_loads_as_a_file(tiny, xt, folders, monkeypatch):
    from svd_inbetween.weights.cache import MEMORY
    from svd_inbetween.weights.format import read_backward_weights
    ours, _ = folders
    setup_release(tiny, folders)
    first = held(node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors", save_transplant=True))
    saved = ours / f"{RELEASE}_delta_svd.safetensors"
    tensors, meta = read_backward_weights(str(saved))
    assert meta["kind"] == "delta" and meta["base"] == "svd.safetensors" and len(tensors) == 32
    assert os.path.getsize(saved) < 0.5 * os.path.getsize(ours / RELEASE_FILE)
    MEMORY.clear()  # as after a restart
    reads = Reads(monkeypatch)
    second = held(node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors"))
    assert reads.count(RELEASE) == 0 and reads.count("svd.safetensors") == 0
    assert reads.count(saved.name) == 32
    picked = held(node(xt, saved.name, 1.0))
    for p in first:
        for a, b, c in zip(first[p], second[p], picked[p]):
            assert torch.equal(a, b) and torch.equal(a, c), p
    # the release changed since: the saved file is stale and not used
    MEMORY.clear()
    reads.reset()
    release = ours / RELEASE_FILE
    os.utime(release, ns=(release.stat().st_atime_ns, release.stat().st_mtime_ns + 10**9))
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    assert reads.count(RELEASE) == 48


def test_switching_save_on_after_a_cached_run_writes_the_file(tiny, xt, folders, monkeypatch):
    ours, _ = folders
    setup_release(tiny, folders)
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    saved = ours / f"{RELEASE}_delta_svd.safetensors"
    assert not saved.exists()
    reads = Reads(monkeypatch)
    held_then = held(node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors", save_transplant=True))
    assert saved.exists() and reads.keys == {}  # written from memory, nothing re-read
    mtime = saved.stat().st_mtime_ns
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors", save_transplant=True)
    assert saved.stat().st_mtime_ns == mtime  # already current: not written again
    picked = held(node(xt, saved.name, 1.0))
    assert all(torch.equal(a, b) for p in picked for a, b in zip(picked[p], held_then[p]))


def test_saving_never_overwrites_a_file_the_node_did_not_write(tiny, xt, folders, caplog):
    from svd_inbetween.weights.format import save_backward_weights
    ours, _ = folders
    setup_release(tiny, folders)
    mine = ours / f"{RELEASE}_delta_svd.safetensors"
    save_backward_weights(str(mine), tiny.backward, "absolute", {"source": "my own training"})
    before = mine.read_bytes()
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors", save_transplant=True)
    assert mine.read_bytes() == before
    assert "was not written by SVDInbetweenLoadBackwardWeights" in caplog.text


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_base_that_is_not_the_weights_base_gets_the_converters_warning(tiny, xt, folders, caplog):
    from svd_inbetween.weights.convert import convert
    ours, ckpts = folders
    g = torch.Generator().manual_seed(11)
    other_q = {p: 0.05 * torch.randn(q.shape, generator=g) for p, q in own_q(tiny.model).items()}
    setup_release(tiny, folders, base_q=other_q)
    caplog.set_level(logging.WARNING)
    convert(str(ours / RELEASE), str(ours.parent / "cli.safetensors"), base=str(ckpts / "svd.safetensors"))
    by_cli = _warnings(caplog)
    assert len(by_cli) == 1 and "does not look like the model these weights were fine-tuned from" in by_cli[0]
    caplog.clear()
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    assert _warnings(caplog) == by_cli
    caplog.clear()
    node(xt, RELEASE_FILE, 0.7, base_checkpoint="svd.safetensors")  # from memory: still said
    assert _warnings(caplog) == by_cli


def test_the_right_base_gives_no_warning(tiny, xt, folders, caplog):
    setup_release(tiny, folders)
    caplog.set_level(logging.WARNING)
    node(xt, RELEASE_FILE, 1.0, base_checkpoint="svd.safetensors")
    assert _warnings(caplog) == []


@pytest.mark.parametrize("case,message", [
    ("compact_base", r"input 'base_checkpoint': backward.safetensors: base_checkpoint must be the SVD checkpoint"),
    ("pickle_base", r"input 'base_checkpoint': svd.ckpt: this is a pickle/zip .*not opened"),
    ("unrelated_base", r"input 'base_checkpoint': svd.safetensors: not an SVD UNet"),
    ("compact_weights", r"input 'base_checkpoint': backward.safetensors is already in the pack's compact format "
                        r"\(kind absolute\) and is used as it is; .* set base_checkpoint to none"),
    ("save_without_base", r"input 'save_transplant': there is nothing to save without a base_checkpoint"),
])
def test_bad_bases_fail_naming_node_input_and_fix(tiny, xt, folders, case, message):
    from svd_inbetween.samplers.validation import InbetweenInputError
    from svd_inbetween.weights.format import save_backward_weights
    ours, ckpts = folders
    setup_release(tiny, folders)
    save_backward_weights(str(ours / "backward.safetensors"), tiny.backward, "absolute")
    weights, kw = RELEASE_FILE, {"base_checkpoint": "svd.safetensors"}
    if case == "compact_base":
        save_backward_weights(str(ckpts / "backward.safetensors"), tiny.backward, "absolute")
        kw["base_checkpoint"] = "backward.safetensors"
    elif case == "pickle_base":
        torch.save({"x": torch.zeros(2)}, str(ckpts / "svd.ckpt"))
        kw["base_checkpoint"] = "svd.ckpt"
    elif case == "unrelated_base":
        save_file({"first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(ckpts / "svd.safetensors"))
    elif case == "compact_weights":
        weights = "backward.safetensors"
    elif case == "save_without_base":
        kw = {"save_transplant": True}
    with pytest.raises(InbetweenInputError, match=f"^{NODE}: {message}"):
        node(xt, weights, 1.0, **kw)


def test_missing_base_is_refused_when_the_prompt_is_queued(tiny, folders):
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    setup_release(tiny, folders)
    ok = SVDInbetweenLoadBackwardWeights.validate_inputs(RELEASE_FILE, "svd.safetensors")
    assert ok is True and SVDInbetweenLoadBackwardWeights.validate_inputs(RELEASE_FILE, "none") is True
    msg = SVDInbetweenLoadBackwardWeights.validate_inputs(RELEASE_FILE, "svd_gone.safetensors")
    assert msg.startswith(f"{NODE}: input 'base_checkpoint': 'svd_gone.safetensors' not found in models/checkpoints/")
