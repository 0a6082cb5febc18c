"""Host: backward weights from the official layout through the loader node onto real ComfyUI SVD models."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from test_weights_convert import random_pairs, unet_tensors, write_official

pytestmark = pytest.mark.host

NODE_FILE = "backward.safetensors"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    import folder_paths
    from svd_inbetween.nodes.common import MODEL_FOLDER
    folder = tmp_path / "models" / MODEL_FOLDER
    folder.mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, MODEL_FOLDER, ([str(folder)], {".safetensors"}))
    return folder


def load(model, models_dir, file, strength=1.0):
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    return SVDInbetweenLoadBackwardWeights.execute(model, os.path.relpath(file, models_dir), strength).args[0]


def held(model) -> dict:
    from svd_inbetween.attention_patch.layers import proxies
    return {p: (px.backward_to_v.weight.detach(), px.backward_to_out.weight.detach()) for p, px in proxies(model).items()}


def own_q(model) -> dict:
    from svd_inbetween.attention_patch.layers import original_module, temporal_attn1_paths
    return {p: original_module(model, p).to_q.weight.detach().clone() for p in temporal_attn1_paths(model)}


def official_for(model, folder, pairs, **kw):
    from svd_inbetween.weights.apply import model_layers
    return write_official(folder, model_layers(model), pairs, q=own_q(model), **kw)[0]


def assert_holds(model, expected: dict):
    got = held(model)
    assert set(got) == set(expected)
    for p, (wv, wo) in expected.items():
        assert torch.equal(got[p][0], wv.float()), p
        assert torch.equal(got[p][1], wo.float()), p


def test_derived_mapping_matches_the_tiny_comfy_model(tiny):
    from svd_inbetween.attention_patch.layers import temporal_attn1_paths
    from svd_inbetween.weights.apply import model_base_weights, model_layers
    layers = model_layers(tiny.model)
    assert [la.comfy for la in layers] == temporal_attn1_paths(tiny.model)
    own = model_base_weights(tiny.model)
    for la in layers:
        assert tuple(own[la.comfy][0].shape) == tuple(own[la.comfy][1].shape) == la.shape
    assert sorted({la.width for la in layers}) == [32, 64, 128]


def test_full_size_release_lands_on_a_full_size_comfy_svd_unet(tmp_path):
    """Real SVD shapes: a full-size ComfyUI SVD UNet on the meta device, a full-size release file."""
    import comfy.model_patcher
    from svd_inbetween.bench.models import svd_base_model
    from svd_inbetween.weights.apply import model_base_weights, model_layers, read_any
    from svd_inbetween.weights.format import key_out, key_v
    meta = torch.device("meta")
    full = comfy.model_patcher.ModelPatcher(svd_base_model("full", torch.float16, meta), load_device=meta,
                                            offload_device=meta)
    layers = model_layers(full)
    assert [la.width for la in layers] == [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640,
                                           320, 320, 320]
    pairs = random_pairs(layers, 4, dtype=torch.float16)
    official = write_official(tmp_path / "release", layers, pairs, extra=False)[0]
    tensors, info, origin = read_any(official, layers)
    assert info["kind"] == "absolute" and len(tensors) == 32
    for path, (wv, wo) in model_base_weights(full).items():
        assert tensors[key_v(path)].shape == wv.shape and tensors[key_out(path)].shape == wo.shape
        assert torch.equal(tensors[key_v(path)], pairs[path][0])
        assert origin[key_v(path)].endswith("temporal_transformer_blocks.0.attn1.to_v.weight")


@pytest.mark.parametrize("fp16", [False, True])
def test_official_file_converted_then_loaded_holds_exactly_the_finetune(tiny, tmp_path, models_dir, fp16):
    from svd_inbetween.attention_patch.layers import original_module
    from svd_inbetween.weights.convert import convert
    official = official_for(tiny.model, tmp_path / "release", tiny.backward)
    out = models_dir / NODE_FILE
    convert(str(tmp_path / "release"), str(out), fp16=fp16)
    before = original_module(tiny.model, "input_blocks.1.1.time_stack.0.attn1").to_v.weight.clone()
    m = load(tiny.model, models_dir, out)
    expected = {p: tuple(w.half() if fp16 else w for w in pair) for p, pair in tiny.backward.items()}
    assert_holds(m, expected)
    assert torch.equal(original_module(tiny.model, "input_blocks.1.1.time_stack.0.attn1").to_v.weight, before)
    assert os.path.isfile(official)


def test_official_file_loads_directly(tiny, tmp_path, models_dir, caplog):
    write_official(models_dir / "svd_reverse_motion_with_attnflip", _layers(tiny), tiny.backward,
                   q=own_q(tiny.model))
    m = load(tiny.model, models_dir, models_dir / "svd_reverse_motion_with_attnflip" / "unet" /
             "diffusion_pytorch_model.safetensors")
    assert_holds(m, tiny.backward)
    assert "fine-tuned from a different SVD" not in caplog.text


def test_official_file_on_another_model_warns_to_use_a_delta(tiny, tmp_path, models_dir, caplog):
    import tiny_models as tm
    other = tm.tiny_svd_model(seed=7)
    official = official_for(tiny.model, models_dir, tiny.backward)
    m = load(other, models_dir, official)
    assert_holds(m, tiny.backward)
    assert "fine-tuned from a different SVD" in caplog.text and "--base" in caplog.text


def _layers(tiny):
    from svd_inbetween.weights.apply import model_layers
    return model_layers(tiny.model)


def test_delta_transplant_onto_the_base_and_onto_another_model(tiny, tmp_path, models_dir):
    import tiny_models as tm
    from svd_inbetween.weights.apply import model_base_weights
    from svd_inbetween.weights.convert import convert
    from svd_inbetween.weights.format import key_out, key_v, read_backward_weights
    layers = _layers(tiny)
    base_w = {p: (wv.detach().clone(), wo.detach().clone()) for p, (wv, wo) in model_base_weights(tiny.model).items()}
    official_for(tiny.model, tmp_path / "release", tiny.backward)
    svd = tmp_path / "svd.safetensors"  # the 14-frame base, as a ComfyUI single-file checkpoint
    save_file(unet_tensors(layers, base_w, scheme="comfyui_checkpoint", q=own_q(tiny.model)), str(svd))
    out = models_dir / NODE_FILE
    convert(str(tmp_path / "release"), str(out), base=str(svd))
    delta, meta = read_backward_weights(str(out))
    assert meta["kind"] == "delta" and float(meta["base_to_q_rel_diff"]) == 0.0

    # On the base itself: base + delta is the fine-tune, bit for bit.
    assert_holds(load(tiny.model, models_dir, out), tiny.backward)

    # On another SVD (the 14-frame -> XT transplant): its own weights + delta, times strength.
    xt = tm.tiny_svd_model(seed=7)
    xt_w = model_base_weights(xt)
    for strength in (1.0, 0.5):
        expected = {p: (wv.float() + strength * delta[key_v(p)], wo.float() + strength * delta[key_out(p)])
                    for p, (wv, wo) in xt_w.items()}
        assert_holds(load(xt, models_dir, out, strength), expected)
    diff = (held(load(xt, models_dir, out))[layers[0].comfy][0] - tiny.backward[layers[0].comfy][0]).abs().max()
    assert diff > 1e-3


def test_trainer_output_loads_without_conversion(tiny, models_dir):
    from svd_inbetween.weights.format import save_backward_weights
    save_backward_weights(str(models_dir / NODE_FILE), tiny.backward, "absolute",
                          {"source": "svd-inbetween train", "base": "svd.safetensors"})
    assert_holds(load(tiny.model, models_dir, models_dir / NODE_FILE), tiny.backward)
    half = load(tiny.model, models_dir, models_dir / NODE_FILE, strength=0.5)
    from svd_inbetween.weights.apply import model_base_weights
    for p, (wv, _) in model_base_weights(tiny.model).items():
        assert torch.allclose(held(half)[p][0], wv + 0.5 * (tiny.backward[p][0] - wv), atol=1e-7)


@pytest.mark.parametrize("kind", ["compact", "official"])
def test_weights_for_another_model_size_name_file_layer_and_expected_shape(tiny, tmp_path, models_dir, kind):
    from svd_inbetween.samplers.validation import InbetweenInputError
    from svd_inbetween.weights.format import save_backward_weights
    from svd_inbetween.weights.keymap import svd_layers
    big = svd_layers(64)
    if kind == "compact":
        path = models_dir / NODE_FILE
        save_backward_weights(str(path), random_pairs(big), "absolute")
        where = r"diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_v.weight"
    else:
        path = write_official(models_dir / "rel", big, random_pairs(big))[0]
        where = (r"down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_v.weight "
                 r"\(layer input_blocks.1.1.time_stack.0.attn1\)")
    name = os.path.basename(path)
    with pytest.raises(InbetweenInputError, match=rf"SVDInbetweenLoadBackwardWeights: input 'weights': {name}: "
                                                  rf"tensor {where} has shape \(64, 64\).*expect.*\(32, 32\)"):
        load(tiny.model, models_dir, path)


@pytest.mark.parametrize("kind", ["unrelated", "pickle"])
def test_wrong_files_fail_in_the_node_with_the_file_name(tiny, models_dir, kind):
    from svd_inbetween.samplers.validation import InbetweenInputError
    path = models_dir / "vae.safetensors"
    if kind == "unrelated":
        save_file({"first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(path))
        message = "not an SVD UNet"
    else:
        torch.save({"x": torch.zeros(2)}, str(path))
        message = "pickle/zip .*not opened"
    with pytest.raises(InbetweenInputError, match=f"input 'weights': vae.safetensors: .*{message}"):
        load(tiny.model, models_dir, path)
