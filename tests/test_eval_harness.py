"""Unit: the evaluation loop with a stand-in generator and tiny extractors (plumbing, not quality numbers):
CSV rows, per-variant table, LPIPS plot, contact sheets, resume; and the weight-file rules of the extractors."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

from svd_inbetween.evaluation import features as feat
from svd_inbetween.evaluation.data import select_pairs
from svd_inbetween.evaluation.harness import Evaluation, Scorers, Variant, parse_variant

FRAMES = 5


class PooledPixels:
    """Tiny frame extractor: 4x4 average-pooled RGB (48 numbers per frame)."""
    name = "pooled-pixels"

    def __call__(self, frames):
        t = torch.from_numpy(np.asarray(frames)).double().movedim(-1, 1)
        return torch.nn.functional.adaptive_avg_pool2d(t, 4).flatten(1).numpy()


class ClipMeans:
    """Tiny clip extractor: per-frame mean colour, concatenated over time."""
    name = "clip-means"

    def __call__(self, clips):
        return np.asarray(clips, dtype=np.float64).mean(axis=(2, 3)).reshape(len(clips), -1)


def abs_diff(a, b):
    return (a - b).abs().flatten(1).mean(1)


@pytest.fixture()
def gt(tmp_path):
    root = tmp_path / "gt"
    rng = np.random.default_rng(0)
    for v in range(2):
        folder = root / f"clip{v}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 255, (32, 40, 3))
        for i in range(9):
            Image.fromarray(np.roll(base, 3 * i, axis=1).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return str(root)


class FakeGenerator:
    """'copy' returns the true clip (read back from the folder), 'noisy:...' adds seeded noise of size cfg."""

    def __init__(self):
        self.calls = []

    def __call__(self, pair, variant, keys):
        from svd_inbetween.evaluation.data import clip_indices, read_frames
        self.calls.append((pair.id, variant.label))
        assert keys.shape == (2, 32, 40, 3)
        clip = torch.from_numpy(read_frames(pair.source, clip_indices(pair, FRAMES))).double() / 255
        settings = dict(variant.settings)
        seed = settings.get("seed", 7)
        if variant.mode != "trf":
            g = torch.Generator().manual_seed(seed)
            clip = (clip + settings.get("cfg", 0.05) * torch.randn(clip.shape, generator=g, dtype=clip.dtype)).clamp(0, 1)
        return clip, {"seed": seed, "settings": f"cfg={settings.get('cfg', '')}"}


def run(gt, out, variants, gen, window=FRAMES):
    scorers = Scorers(lpips=abs_diff, frame_features=PooledPixels(), clip_features=ClipMeans())
    ev = Evaluation(select_pairs(gt, window=window), variants, gen, scorers, out, FRAMES)
    return ev, ev.run()


KEYS = {"cfg": float, "seed": int}


def test_plumbing_tiny_extractors_table_plot_sheets_and_resume(gt, tmp_path):
    out = str(tmp_path / "out")
    copy = parse_variant("trf", KEYS, ("gi", "trf"))
    noisy = parse_variant("gi:cfg=0.2,seed=3", KEYS, ("gi", "trf"))
    assert noisy == Variant("gi:cfg=0.2,seed=3", "gi", (("cfg", 0.2), ("seed", 3)))
    gen = FakeGenerator()
    ev, summary = run(gt, out, [copy, noisy], gen, window=9)
    assert gen.calls == [("clip0@0-8", "trf"), ("clip0@0-8", "gi:cfg=0.2,seed=3"),
                         ("clip1@0-8", "trf"), ("clip1@0-8", "gi:cfg=0.2,seed=3")]
    by = {s["variant"]: s for s in summary}
    assert by["trf"]["pairs"] == 2 and by["trf"]["frames"] == 2 * FRAMES
    assert np.isinf(by["trf"]["psnr"]) and by["trf"]["ssim"] == pytest.approx(1.0)
    assert by["trf"]["lpips"] == 0 and by["trf"]["fid"] == pytest.approx(0, abs=1e-6)
    assert by["trf"]["fvd"] == pytest.approx(0, abs=1e-6)
    noisy_row = by["gi:cfg=0.2,seed=3"]
    assert 5 < noisy_row["psnr"] < 25 and noisy_row["ssim"] < 0.9 and noisy_row["lpips"] > 0.05
    assert noisy_row["fid"] > 0 and noisy_row["fvd"] > 0

    with open(os.path.join(out, "clips.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["seed"] for r in rows} == {"7", "3"}
    assert [r["start"] + "-" + r["end"] for r in rows] == ["0-8"] * 4
    assert all(len(r["lpips_frames"].split()) == FRAMES for r in rows)
    table = open(os.path.join(out, "summary.md")).read()
    assert "| trf | 2 | 10 | inf | 1.0000 | 0.0000 |" in table and "gi:cfg=0.2,seed=3" in table
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        assert [r["variant"] for r in csv.DictReader(f)] == ["trf", "gi:cfg=0.2,seed=3"]
    plot = Image.open(os.path.join(out, "lpips_per_frame.png"))
    assert plot.size == (720, 420) and len(np.unique(np.asarray(plot).reshape(-1, 3), axis=0)) > 3
    sheets = sorted(os.listdir(os.path.join(out, "sheets")))
    assert sheets == ["clip0_0-8.png", "clip1_0-8.png"]
    sheet = Image.open(os.path.join(out, "sheets", sheets[0]))
    assert sheet.size[1] == 4 * (102 + 4)  # keyframes, ground truth, 2 variants; 128 x 102 thumbnails

    # resume: the scored pairs are skipped; only a new variant is generated
    gen2 = FakeGenerator()
    brighter = parse_variant("gi:cfg=0.05", KEYS, ("gi", "trf"))
    _, summary2 = run(gt, out, [copy, noisy, brighter], gen2, window=9)
    assert gen2.calls == [("clip0@0-8", "gi:cfg=0.05"), ("clip1@0-8", "gi:cfg=0.05")]
    assert [s["fid"] for s in summary2[:2]] == [s["fid"] for s in summary]
    with open(os.path.join(out, "clips.csv"), newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert summary2[2]["psnr"] > noisy_row["psnr"]

    # features cached with other extractors are refused, not silently mixed
    other = Scorers(frame_features=ClipMeans())
    with pytest.raises(ValueError, match="use the same extractors or a new --output"):
        Evaluation(select_pairs(gt, window=9), [copy], gen2, other, out, FRAMES).run()


def test_parse_variant_errors():
    with pytest.raises(ValueError, match="mode must be one of gi, trf"):
        parse_variant("fast", KEYS, ("gi", "trf"))
    with pytest.raises(ValueError, match="'steps=3' is not key=value with a key among cfg, seed"):
        parse_variant("gi:steps=3", KEYS, ("gi", "trf"))
    with pytest.raises(ValueError, match="seed must be a int"):
        parse_variant("gi:seed=x", KEYS, ("gi", "trf"))


def test_missing_weights_name_the_file_and_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(feat.MissingWeights, match=r"needs alexnet-owt-7be5be79\.pth.*Download https://download"
                                                  r"\.pytorch\.org/models/alexnet-owt-7be5be79\.pth and pass --lpips-weights"):
        feat.find_weights(feat.LPIPS_BACKBONES["alex"], None, [str(tmp_path / "hub" / "checkpoints")])
    with pytest.raises(feat.MissingWeights, match="--fid-weights /nope.pth: file not found"):
        feat.find_weights(feat.INCEPTION, "/nope.pth", [])
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / feat.INCEPTION.filename).write_bytes(b"x")
    assert feat.find_weights(feat.INCEPTION, None, [str(cache)]) == str(cache / feat.INCEPTION.filename)


def test_lpips_reads_the_backbone_from_a_local_file(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    import torchvision
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    with pytest.raises(feat.MissingWeights, match="alexnet-owt-7be5be79.pth"):
        feat.LpipsDistance("alex")
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = str(tmp_path / "alex.pth")
    torch.save(state, path)
    metric = feat.LpipsDistance("alex", path)
    assert torch.equal(getattr(metric.model.net.slice2, "3").weight, state["features.3.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").bias, state["features.10.bias"])
    assert metric.model.lins[0].model[-1].weight.abs().sum() > 0  # the linear heads shipped in the wheel
    a = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(metric(a, a), torch.zeros(2, dtype=torch.float64))
    d = metric(a, a.flip(1))
    assert d.shape == (2,) and bool((d > 0).all())


def test_i3d_features_from_a_local_file(tmp_path):
    pytest.importorskip("cdfvd")
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    torch.manual_seed(0)
    path = str(tmp_path / "i3d.pt")
    torch.save(InceptionI3d(400, in_channels=3).state_dict(), path)
    extractor = feat.VideoFeatures("i3d", path)
    clips = np.random.default_rng(0).integers(0, 255, (2, 10, 24, 24, 3), dtype=np.uint8)
    f = extractor(clips)
    assert f.shape == (2, 400) and np.isfinite(f).all() and not np.allclose(f[0], f[1])


def test_inception_features_plumbing(tmp_path, monkeypatch):
    """The torch-fidelity network is built from the given file, never the URL; here with its own random init."""
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    monkeypatch.setattr(tf, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    monkeypatch.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    path = tmp_path / feat.INCEPTION.filename
    torch.save({}, str(path))
    torch.manual_seed(0)
    extractor = feat.InceptionFeatures(str(path), batch=2)
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 56, 3), dtype=np.uint8)
    f = extractor(frames)
    assert f.shape == (3, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert not np.allclose(f[0], f[1])
