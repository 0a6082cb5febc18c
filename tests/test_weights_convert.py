"""Unit: key mapping, lazy conversion of the official release, bad files (no ComfyUI needed)."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from svd_inbetween.weights import source as source_mod
from svd_inbetween.weights.convert import convert
from svd_inbetween.weights.format import (FORMAT, BackwardWeightsError, key_out, key_v, read_backward_weights,
                                          save_backward_weights)
from svd_inbetween.weights.keymap import (SUFFIXES, file_key, layers_from_comfy_config, layers_from_diffusers_config,
                                          svd_layers)

# The spec, from the official code (attn_ctrl) and ComfyUI's SVD UNet; not derived.
OFFICIAL_PREFIXES = [
    "down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "down_blocks.1.attentions.0",
    "down_blocks.1.attentions.1", "down_blocks.2.attentions.0", "down_blocks.2.attentions.1",
    "mid_block.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
    "up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2",
    "up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "up_blocks.3.attentions.2"]
COMFY_BLOCKS = ([f"input_blocks.{i}.1" for i in (1, 2, 4, 5, 7, 8)] + ["middle_block.1"]
                + [f"output_blocks.{i}.1" for i in range(3, 12)])
REAL_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]
TINY = 32  # model_channels of tests/tiny_models.py

DIFFUSERS_SVD_CONFIG = {
    "_class_name": "UNetSpatioTemporalConditionModel", "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    "layers_per_block": 2, "num_attention_heads": [5, 10, 20, 20], "num_frames": 14,
    "transformer_layers_per_block": 1}


def comfy_unet_config(model_channels: int = 320, num_res_blocks: int = 2) -> dict:
    """ComfyUI's unet_config for SVD (as model detection builds it)."""
    n = num_res_blocks
    return {"model_channels": model_channels, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [n] * 4,
            "transformer_depth": [1] * (3 * n) + [0] * n, "transformer_depth_output": [1] * (3 * (n + 1)) + [0] * (n + 1),
            "transformer_depth_middle": 1}


def random_pairs(layers, seed: int = 0, scale: float = 0.05, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {la.comfy: tuple((scale * torch.randn(la.shape, generator=g)).to(dtype) for _ in SUFFIXES) for la in layers}


def unet_tensors(layers, pairs, scheme: str = "diffusers", q_seed: int = 100, extra: bool = True,
                 q: dict | None = None) -> dict:
    """A full-UNet-like state dict: the 32 tensors, untrained to_q (random or `q`)/to_k/bias, unrelated tensors."""
    g = torch.Generator().manual_seed(q_seed)
    out = {}
    for la in layers:
        wv, wo = pairs[la.comfy]
        out[file_key(scheme, la, SUFFIXES[0])] = wv
        out[file_key(scheme, la, SUFFIXES[1])] = wo
        if extra:
            wq = q[la.comfy] if q is not None else 0.05 * torch.randn(la.shape, generator=g)
            out[file_key(scheme, la, "to_q.weight")] = wq.to(wv.dtype)
            out[file_key(scheme, la, "to_k.weight")] = torch.zeros(la.shape, dtype=wv.dtype)
            out[file_key(scheme, la, "to_out.0.bias")] = torch.zeros(la.width, dtype=wv.dtype)
    if extra:
        prefix = {"diffusers": "", "comfyui_checkpoint": "model.diffusion_model."}.get(scheme, "")
        out[prefix + "conv_in.weight"] = torch.randn(8, 8, 3, 3, generator=g)
        out[prefix + "big.unrelated.weight"] = torch.zeros(512, 512)
    return out


def write_official(folder, layers=None, pairs=None, seed: int = 0, **kw):
    """A tiny diffusers pipeline folder: folder/unet/{diffusion_pytorch_model.safetensors,config.json}."""
    layers = layers or svd_layers(TINY)
    pairs = pairs or random_pairs(layers, seed)
    unet = os.path.join(folder, "unet")
    os.makedirs(unet, exist_ok=True)
    path = os.path.join(unet, "diffusion_pytorch_model.safetensors")
    save_file(unet_tensors(layers, pairs, **kw), path)
    return path, pairs


def compact(path):
    tensors, meta = read_backward_weights(path)
    return tensors, meta


# ---------------------------------------------------------------- mapping

def test_svd_mapping_matches_official_names_comfy_paths_and_widths():
    layers = svd_layers()
    assert [la.diffusers for la in layers] == [p + ".temporal_transformer_blocks.0.attn1" for p in OFFICIAL_PREFIXES]
    assert [la.comfy for la in layers] == [b + ".time_stack.0.attn1" for b in COMFY_BLOCKS]
    assert [la.width for la in layers] == REAL_WIDTHS
    assert sum(2 * la.width ** 2 for la in layers) == 24_780_800


def test_comfy_and_diffusers_configs_derive_the_same_mapping():
    assert layers_from_comfy_config(comfy_unet_config(320)) == svd_layers(320)
    assert layers_from_diffusers_config(DIFFUSERS_SVD_CONFIG) == svd_layers(320)
    tiny = dict(DIFFUSERS_SVD_CONFIG, block_out_channels=[32, 64, 128, 128])
    assert layers_from_diffusers_config(tiny) == layers_from_comfy_config(comfy_unet_config(TINY)) == svd_layers(TINY)


def test_mapping_is_derived_from_block_structure_not_a_table():
    # Three res blocks per level shift every flat ComfyUI index; both derivations must follow.
    comfy = layers_from_comfy_config(comfy_unet_config(64, num_res_blocks=3))
    diff = layers_from_diffusers_config(dict(DIFFUSERS_SVD_CONFIG, layers_per_block=3,
                                             block_out_channels=[64, 128, 256, 256]))
    assert comfy == diff
    got = {la.diffusers.split(".temporal")[0]: (la.comfy.split(".time_stack")[0], la.width) for la in comfy}
    assert len(comfy) == 3 * 3 + 1 + 3 * 4
    assert got["down_blocks.0.attentions.2"] == ("input_blocks.3.1", 64)
    assert got["down_blocks.1.attentions.0"] == ("input_blocks.5.1", 128)   # after the downsampler at 4
    assert got["down_blocks.2.attentions.2"] == ("input_blocks.11.1", 256)
    assert got["up_blocks.1.attentions.0"] == ("output_blocks.4.1", 256)    # up_blocks.0 has 4 blocks, no attention
    assert got["up_blocks.3.attentions.3"] == ("output_blocks.15.1", 64)


# ---------------------------------------------------------------- conversion

def test_convert_reads_only_the_32_tensors(tmp_path, monkeypatch):
    official, pairs = write_official(tmp_path / "release")
    read = []
    real = source_mod.safe_open

    class Counting:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(source_mod, "safe_open", Counting)
    convert(str(tmp_path / "release"), str(tmp_path / "out.safetensors"))
    expected = {file_key("diffusers", la, s) for la in svd_layers(TINY) for s in SUFFIXES}
    assert len(read) == 32 and set(read) == expected


@pytest.mark.parametrize("given", ["file", "unet_folder", "pipeline_folder"])
def test_convert_absolute_fp32_holds_exactly_the_official_tensors(tmp_path, given):
    official, pairs = write_official(tmp_path / "release")
    src = {"file": official, "unet_folder": os.path.dirname(official), "pipeline_folder": tmp_path / "release"}[given]
    out = tmp_path / "compact.safetensors"
    convert(str(src), str(out))
    tensors, meta = compact(str(out))
    assert len(tensors) == 32
    for path, (wv, wo) in pairs.items():
        assert torch.equal(tensors[key_v(path)], wv) and torch.equal(tensors[key_out(path)], wo)
    assert meta["format"] == FORMAT and meta["kind"] == "absolute" and meta["dtype"] == "float32"
    assert meta["source_format"] == "diffusers" and meta["base"] == ""
    assert meta["source"] == os.path.basename(os.path.normpath(str(src)))


def test_convert_fp16_halves_the_file(tmp_path):
    official, pairs = write_official(tmp_path / "release")
    convert(official, str(tmp_path / "a.safetensors"))
    convert(official, str(tmp_path / "h.safetensors"), fp16=True)
    tensors, meta = compact(str(tmp_path / "h.safetensors"))
    assert meta["dtype"] == "float16"
    for path, (wv, wo) in pairs.items():
        assert torch.equal(tensors[key_v(path)], wv.half()) and torch.equal(tensors[key_out(path)], wo.half())
    a, h = os.path.getsize(tmp_path / "a.safetensors"), os.path.getsize(tmp_path / "h.safetensors")
    assert h < 0.52 * a


def test_config_json_gives_the_widths(tmp_path):
    official, _ = write_official(tmp_path / "release")
    cfg = dict(DIFFUSERS_SVD_CONFIG, block_out_channels=[32, 64, 128, 128])
    (tmp_path / "release" / "unet" / "config.json").write_text(json.dumps(cfg))
    convert(official, str(tmp_path / "ok.safetensors"))
    cfg["block_out_channels"] = [64, 128, 256, 256]
    (tmp_path / "release" / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackwardWeightsError, match=r"diffusion_pytorch_model.safetensors: tensor down_blocks.0.*"
                                                   r"has shape \(32, 32\), expected \(64, 64\)"):
        convert(official, str(tmp_path / "bad.safetensors"))


def test_sharded_release_is_read_through_its_index(tmp_path):
    layers = svd_layers(TINY)
    pairs = random_pairs(layers, 3)
    sd = unet_tensors(layers, pairs)
    keys = sorted(sd)
    unet = tmp_path / "unet"
    unet.mkdir()
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(unet / name))
        weight_map.update({k: name for k in part})
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    convert(str(tmp_path), str(tmp_path / "out.safetensors"))
    tensors, _ = compact(str(tmp_path / "out.safetensors"))
    assert all(torch.equal(tensors[key_v(p)], wv) for p, (wv, _) in pairs.items())


@pytest.mark.parametrize("base_scheme", ["diffusers", "comfyui_checkpoint"])
def test_delta_plus_base_reproduces_the_finetune_exactly(tmp_path, base_scheme):
    layers = svd_layers(TINY)
    base = random_pairs(layers, 1)
    g = torch.Generator().manual_seed(2)
    tuned = {p: tuple(w + 0.1 * w.std() * torch.randn(w.shape, generator=g) for w in pair) for p, pair in base.items()}
    official, _ = write_official(tmp_path / "release", layers, tuned)
    base_file = tmp_path / "svd.safetensors"
    save_file(unet_tensors(layers, base, scheme=base_scheme), str(base_file))
    out = tmp_path / "delta.safetensors"
    convert(official, str(out), base=str(base_file))
    tensors, meta = compact(str(out))
    assert meta["kind"] == "delta" and meta["base"] == "svd.safetensors" and meta["base_format"] == base_scheme
    assert float(meta["base_to_q_rel_diff"]) == 0.0
    for p in tuned:
        for i, key in enumerate((key_v(p), key_out(p))):
            assert tensors[key].dtype == torch.float32
            assert torch.equal(base[p][i] + tensors[key], tuned[p][i]), key


def test_delta_in_general_is_within_fp32_rounding(tmp_path):
    # Weight decay shrinks weights: W' - W is then not always exact in fp32, but within half an ulp of it.
    layers = svd_layers(TINY)
    base = random_pairs(layers, 1)
    tuned = {p: tuple(0.9 * w + 0.01 * torch.randn_like(w) for w in pair) for p, pair in base.items()}
    official, _ = write_official(tmp_path / "release", layers, tuned)
    base_file = tmp_path / "svd.safetensors"
    save_file(unet_tensors(layers, base), str(base_file))
    convert(official, str(tmp_path / "d.safetensors"), base=str(base_file))
    tensors, _ = compact(str(tmp_path / "d.safetensors"))
    for p in tuned:
        d = tensors[key_v(p)]
        err = (base[p][0] + d - tuned[p][0]).abs()
        ulp = torch.finfo(torch.float32).eps * torch.maximum(d.abs(), tuned[p][0].abs())
        assert (err <= ulp).all()


def test_delta_against_a_different_base_warns(tmp_path, caplog):
    layers = svd_layers(TINY)
    official, _ = write_official(tmp_path / "release", layers, q_seed=100)
    base_file = tmp_path / "svd_xt.safetensors"
    save_file(unet_tensors(layers, random_pairs(layers, 9), q_seed=200), str(base_file))
    convert(official, str(tmp_path / "d.safetensors"), base=str(base_file))
    assert "does not look like the model these weights were fine-tuned from" in caplog.text
    _, meta = compact(str(tmp_path / "d.safetensors"))
    assert float(meta["base_to_q_rel_diff"]) > 0.5


def test_full_size_release_maps_onto_real_svd_shapes(tmp_path):
    layers = svd_layers()
    pairs = random_pairs(layers, 4, dtype=torch.float16)
    official, _ = write_official(tmp_path / "release", layers, pairs, extra=False)
    out = tmp_path / "full_fp16.safetensors"
    convert(official, str(out), fp16=True)
    size = os.path.getsize(out)
    assert 49_000_000 < size <= 100_000_000
    with safe_open(str(out), framework="pt") as f:
        assert len(list(f.keys())) == 32
        for block, width in zip(COMFY_BLOCKS, REAL_WIDTHS):
            for key in (f"diffusion_model.{block}.time_stack.0.attn1.to_v.weight",
                        f"diffusion_model.{block}.time_stack.0.attn1.to_out.0.weight"):
                assert tuple(f.get_slice(key).get_shape()) == (width, width)
        assert torch.equal(f.get_tensor(key_out("output_blocks.11.1.time_stack.0.attn1")),
                           pairs["output_blocks.11.1.time_stack.0.attn1"][1])


# ---------------------------------------------------------------- refusals

class _Trap:
    """Unpickling this creates the marker file: proves nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_file(kind: str, tmp_path) -> str:
    path = str(tmp_path / "weights.safetensors")
    layers = svd_layers(TINY)
    if kind == "text":
        open(path, "w").write("<html>Google Drive: virus scan warning</html>" * 20)
    elif kind == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Trap(str(tmp_path / "UNPICKLED"))}, f)
    elif kind == "torch_zip":
        torch.save({"state_dict": _Trap(str(tmp_path / "UNPICKLED"))}, path)
    elif kind == "empty":
        open(path, "wb").close()
    elif kind in ("truncated", "truncated_header"):
        full = str(tmp_path / "full.safetensors")
        save_file(unet_tensors(layers, random_pairs(layers)), full)
        data = open(full, "rb").read()
        cut = len(data) // 2 if kind == "truncated" else 8 + struct.unpack("<Q", data[:8])[0] // 2
        open(path, "wb").write(data[:cut])
    elif kind == "unrelated":
        save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3), "decoder.conv_out.bias": torch.zeros(3)}, path)
    elif kind == "missing":
        sd = unet_tensors(layers, random_pairs(layers))
        del sd["up_blocks.2.attentions.1.temporal_transformer_blocks.0.attn1.to_out.0.weight"]
        save_file(sd, path)
    elif kind == "wrong_shape":
        sd = unet_tensors(layers, random_pairs(layers))
        sd["mid_block.attentions.0.temporal_transformer_blocks.0.attn1.to_v.weight"] = torch.zeros(128, 64)
        save_file(sd, path)
    elif kind == "int":
        sd = unet_tensors(layers, random_pairs(layers))
        sd["down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_v.weight"] = torch.zeros(
            64, 64, dtype=torch.int32)
        save_file(sd, path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("text", "not a safetensors file"),
    ("pickle", "this is a pickle/zip .*not opened"),
    ("torch_zip", "this is a pickle/zip .*not opened"),
    ("empty", "empty or truncated"),
    ("truncated", "truncated: header promises"),
    ("truncated_header", "truncated: the header alone"),
    ("unrelated", "not an SVD UNet: none of the 16 temporal attention layers .*encoder.conv_in.weight"),
    ("missing", r"missing tensor up_blocks.2.attentions.1.temporal_transformer_blocks.0.attn1.to_out.0.weight "
                r"\(layer output_blocks.7.1.time_stack.0.attn1\)"),
    ("wrong_shape", r"tensor mid_block.attentions.0.*\(layer middle_block.1.time_stack.0.attn1\) has shape "
                    r"\(128, 64\), expected \(128, 128\)"),
    ("int", "tensor down_blocks.1.attentions.0.* has dtype I32, expected a float"),
])
def test_bad_files_are_refused_with_a_message_naming_the_file(tmp_path, kind, message):
    path = _bad_file(kind, tmp_path)
    with pytest.raises(BackwardWeightsError, match=f"^weights.safetensors: {message}"):
        convert(path, str(tmp_path / "out.safetensors"))
    assert not os.path.exists(tmp_path / "UNPICKLED")
    assert not os.path.exists(tmp_path / "out.safetensors")
    assert not os.path.exists(tmp_path / "out.safetensors.partial")


def test_folder_with_only_pickle_weights_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(BackwardWeightsError, match="only pickle weights .*never opened"):
        convert(str(tmp_path), str(tmp_path / "out.safetensors"))


def test_compact_files_are_not_reconverted_or_used_as_base(tmp_path):
    official, pairs = write_official(tmp_path / "release")
    done = tmp_path / "done.safetensors"
    convert(official, str(done))
    with pytest.raises(BackwardWeightsError, match="already in the pack's compact format"):
        convert(str(done), str(tmp_path / "again.safetensors"))
    with pytest.raises(BackwardWeightsError, match="--base must be the SVD checkpoint"):
        convert(official, str(tmp_path / "d.safetensors"), base=str(done))
    with pytest.raises(BackwardWeightsError, match="overwrite an input"):
        convert(official, official)


def test_other_format_versions_are_refused(tmp_path):
    path = str(tmp_path / "future.safetensors")
    save_backward_weights(path, random_pairs(svd_layers(TINY)), "absolute", {"format_version": "2"})
    with pytest.raises(BackwardWeightsError, match="format version '2' is not supported"):
        read_backward_weights(path)


# ---------------------------------------------------------------- command line

def _cli(argv):
    from svd_inbetween.cli import convert as cli_convert
    parser = argparse.ArgumentParser()
    cli_convert.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


def test_cli_convert_writes_a_named_file_into_a_folder(tmp_path, capsys):
    official, pairs = write_official(tmp_path / "release")
    base = tmp_path / "svd.safetensors"
    save_file(unet_tensors(svd_layers(TINY), random_pairs(svd_layers(TINY), 7), scheme="comfyui_checkpoint",
                           q_seed=100), str(base))
    models = tmp_path / "models"
    models.mkdir()
    assert _cli([str(tmp_path / "release"), "-o", str(models), "--base", str(base), "--fp16"]) == 0
    out = models / "svd_reverse_motion_with_attnflip_delta_fp16.safetensors"
    _, meta = compact(str(out))
    assert (meta["kind"], meta["dtype"], meta["base"]) == ("delta", "float16", "svd.safetensors")
    assert "delta weights, 16 layers, 32 tensors" in capsys.readouterr().out


def test_cli_convert_reports_errors_with_exit_code_2(tmp_path, capsys):
    path = _bad_file("unrelated", tmp_path)
    assert _cli([path, "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "not an SVD UNet" in capsys.readouterr().err


@pytest.mark.parametrize("low_bytes", [b"\x80", b"PK"])
def test_header_length_starting_like_pickle_magic_is_still_safetensors(tmp_path, low_bytes):
    # Regression: a valid file whose little-endian header length begins with 0x80 or "PK" was refused as pickle.
    path = str(tmp_path / "w.safetensors")
    pairs = random_pairs(svd_layers(TINY))
    save_backward_weights(path, pairs, "absolute", {"pad": ""})
    n0 = struct.unpack("<Q", open(path, "rb").read(8))[0]
    want = int.from_bytes(low_bytes, "little")
    mod = 256 ** len(low_bytes)
    target = n0 - n0 % mod + want + (mod if n0 % mod >= want else 0)
    save_backward_weights(path, pairs, "absolute", {"pad": "x" * (target - n0)})  # header is padded to 8 bytes
    assert open(path, "rb").read(len(low_bytes)) == low_bytes
    tensors, meta = read_backward_weights(path)
    assert meta["pad"].startswith("x") and len(tensors) == 32
