"""Unit: the evaluation harness's math (Fréchet distance, PSNR, SSIM), ground-truth pair selection, and the
generate -> score -> resume loop with a stand-in generator (no ComfyUI, no pretrained networks)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from svd_inbetween.evaluation import data as gtdata
from svd_inbetween.evaluation.frechet import frechet_distance, frechet_from_features, gaussian_stats
from svd_inbetween.evaluation.metrics import psnr, ssim


# ---- Fréchet distance against closed forms

def test_frechet_1d_and_diagonal_gaussians():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert d == pytest.approx(9.0 + 1.0, abs=1e-10)
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.0])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    want = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())  # 5 + 4 + 1 + 0.25
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(want, abs=1e-10)
    assert want == pytest.approx(10.25)


def test_frechet_commuting_rotated_covariances():
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a, b = torch.tensor([3.0, 1.0, 0.5, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 2.0, 0.1], dtype=torch.float64)
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    mu = torch.zeros(4, dtype=torch.float64)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(float((a.sqrt() - b.sqrt()).square().sum()), abs=1e-9)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_non_commuting_2x2():
    # for 2x2 M = S1 S2 (positive eigenvalues): tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    s1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    m = s1 @ s2
    assert not torch.allclose(m, s2 @ s1)
    tr_sqrt = math.sqrt(float(m.trace()) + 2 * math.sqrt(float(torch.linalg.det(m))))
    mu1, mu2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    want = 5.0 + float(s1.trace() + s2.trace()) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, abs=1e-10)


def test_frechet_from_samples_converges_to_the_analytic_value():
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.normal([0.0, 1.0], [1.0, 2.0], size=(n, 2))
    y = rng.normal([1.0, 1.0], [3.0, 1.0], size=(n, 2))
    want = 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_from_features(x, y) == pytest.approx(want, abs=0.05)
    mu, cov = gaussian_stats(x[:3])
    assert torch.allclose(cov, torch.from_numpy(np.cov(x[:3], rowvar=False)))


def test_frechet_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same extractor"):
        frechet_from_features(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        gaussian_stats(np.zeros((1, 4)))


# ---- PSNR / SSIM against hand-computed values

def test_psnr_hand_values():
    a = torch.full((2, 16, 16, 3), 0.5, dtype=torch.float64)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1, :8] += 0.2  # half the pixels off by 0.2: MSE 0.02 -> 10 log10(50)
    got = psnr(a, b)
    assert got[0].item() == pytest.approx(20.0, abs=1e-9)
    assert got[1].item() == pytest.approx(10 * math.log10(50), abs=1e-9)
    assert math.isinf(psnr(a, a)[0].item())
    assert psnr(a * 255, b * 255, data_range=255.0)[0].item() == pytest.approx(20.0, abs=1e-9)


def test_ssim_hand_values():
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    a = torch.full((1, 16, 16, 3), 0.2, dtype=torch.float64)
    b = torch.full((1, 16, 16, 3), 0.7, dtype=torch.float64)
    # flat frames: zero variances, so SSIM is the luminance term alone
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.7 + c1) / (0.2 ** 2 + 0.7 ** 2 + c1), abs=1e-12)
    x = torch.rand(2, 20, 24, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # a frame against its inverse: strongly negative structure
    assert ssim(x, 1 - x)[0].item() < -0.5
    # an 11x11 frame has one window: the plain (Gaussian-weighted) formula over the whole frame
    y = torch.rand(1, 11, 11, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = (y * 0.5 + 0.1).clamp(0, 1)
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    p, q = y[0, ..., 0], z[0, ..., 0]
    mp, mq = (w * p).sum(), (w * q).sum()
    vp, vq, cpq = (w * p * p).sum() - mp ** 2, (w * q * q).sum() - mq ** 2, (w * p * q).sum() - mp * mq
    want = (2 * mp * mq + c1) * (2 * cpq + c2) / ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2))
    assert ssim(y, z).item() == pytest.approx(want.item(), abs=1e-12)


def test_psnr_ssim_agree_with_torchmetrics_when_installed():
    """torchmetrics >= 1.x averages SSIM over the reflect-padded full frame; Wang et al.'s reference code and
    scikit-image average over the valid windows only, as we do: the same SSIM map, cropped."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 32, 40, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(3, 32, 40, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    pa, pb = a.movedim(-1, 1), b.movedim(-1, 1)
    _, full = tm.structural_similarity_index_measure(pb, pa, data_range=1.0, return_full_image=True)
    assert torch.allclose(ssim(a, b), full[..., 5:-5, 5:-5].flatten(1).mean(1), atol=1e-10)
    for i in range(3):
        assert psnr(a, b)[i].item() == pytest.approx(
            tm.peak_signal_noise_ratio(pb[i:i + 1], pa[i:i + 1], data_range=1.0).item(), abs=1e-5)


# ---- ground truth folders and pair selection

def frame_image(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i is flat grey 20 * i (+ a 16 px bar), easy to recognise after lossy video coding."""
    img = np.full((h, w, 3), 20 * i, dtype=np.uint8)
    img[:, :16] = 255 - 20 * i
    return img


def write_video(path: str, n: int, fps: int = 8) -> None:
    import av
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"crf": "10"}
        for i in range(n):
            for packet in s.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def write_frames(folder: str, n: int) -> None:
    from PIL import Image
    os.makedirs(folder)
    for i in range(n):
        Image.fromarray(frame_image(i)).save(os.path.join(folder, f"f{i:03d}.png"))


@pytest.fixture(scope="module")
def gt_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt")
    write_video(str(root / "a_video.mp4"), 12)
    write_frames(str(root / "b_frames"), 7)
    (root / "notes.txt").write_text("not a video")
    return str(root)


def test_sources_and_frame_counts(gt_folder):
    sources = gtdata.list_sources(gt_folder)
    assert [os.path.basename(s) for s in sources] == ["a_video.mp4", "b_frames"]
    assert [gtdata.count_frames(s) for s in sources] == [12, 7]


def test_read_frames_returns_the_right_frames(gt_folder):
    video, frames = gtdata.list_sources(gt_folder)
    got = gtdata.read_frames(video, [9, 0, 4])
    assert got.shape == (3, 48, 64, 3) and got.dtype == np.uint8
    for k, i in enumerate([9, 0, 4]):
        assert abs(float(got[k, :, 24:].mean()) - 20 * i) < 3, i
    assert np.array_equal(gtdata.read_frames(frames, [6, 2]), np.stack([frame_image(6), frame_image(2)]))
    with pytest.raises(gtdata.EvalDataError, match="has no frame 12"):
        gtdata.read_frames(video, [12])


def test_select_pairs_windows_stride_and_caps(gt_folder):
    pairs = gtdata.select_pairs(gt_folder, window=5, stride=3)
    # video (12 frames): windows at 0, 3, 6; frames (7): at 0; round-robin over sources
    assert [p.id for p in pairs] == ["a_video.mp4@0-4", "b_frames@0-4", "a_video.mp4@3-7", "a_video.mp4@6-10"]
    assert [p.id for p in gtdata.select_pairs(gt_folder, window=5, stride=3, max_pairs=2)] == \
        ["a_video.mp4@0-4", "b_frames@0-4"]
    assert [p.id for p in gtdata.select_pairs(gt_folder, window=5, stride=3, per_source=1)] == \
        ["a_video.mp4@0-4", "b_frames@0-4"]
    assert [p.id for p in gtdata.select_pairs(gt_folder, window=6)] == ["a_video.mp4@0-5", "b_frames@0-5",
                                                                        "a_video.mp4@6-11"]
    with pytest.raises(gtdata.EvalDataError, match="no video .* has 13 frames"):
        gtdata.select_pairs(gt_folder, window=13)
    assert gtdata.clip_indices(gtdata.Pair("x", 3, 11), 5) == [3, 5, 7, 9, 11]
    assert gtdata.clip_indices(gtdata.Pair("x", 0, 4), 5) == [0, 1, 2, 3, 4]


def test_pair_list(gt_folder, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("# source,start,end\na_video.mp4, 2, 11\nb_frames,0,6\n")
    pairs = gtdata.read_pair_list(str(path), gt_folder)
    assert [(p.id, p.start, p.end) for p in pairs] == [("a_video.mp4@2-11", 2, 11), ("b_frames@0-6", 0, 6)]
    path.write_text("missing.mp4,0,5\n")
    with pytest.raises(gtdata.EvalDataError, match="line 1: ground truth not found"):
        gtdata.read_pair_list(str(path), gt_folder)
    path.write_text("a_video.mp4,5\n")
    with pytest.raises(gtdata.EvalDataError, match="line 1: expected 'source,start,end'"):
        gtdata.read_pair_list(str(path), gt_folder)


@pytest.mark.host
def test_eval_scoring_outside_comfyui_uses_the_local_checkout(tmp_path):
    """`svd-inbetween eval` runs in a plain Python: scoring resizes the ground truth with ComfyUI's own resize,
    so it makes --comfyui importable, or says clearly that it needs it (regression: ModuleNotFoundError)."""
    import subprocess
    import sys

    from host import COMFYUI_PATH
    code = ("import argparse, sys, numpy as np\n"
            "assert 'comfy' not in sys.modules\n"
            "from svd_inbetween.cli.eval import fit_like_conditioning\n"
            "fit = fit_like_conditioning(argparse.Namespace(comfyui=sys.argv[1], resize='crop'))\n"
            "print(fit(np.full((2, 72, 88, 3), 128, np.uint8), 64, 48).shape)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMFYUI_PATH")}
    ok = subprocess.run([sys.executable, "-c", code, COMFYUI_PATH], capture_output=True, text=True, cwd=tmp_path,
                        env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().splitlines()[-1] == "(2, 48, 64, 3)"
    bad = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nowhere")], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode != 0
    assert "svd-inbetween eval: the ground truth is resized with ComfyUI's own resize" in bad.stderr
    assert "Traceback" not in bad.stderr



def test_film_multipliers_make_the_frame_count():
    """FrameInterpolate passes (multiplier 2..16 each) whose product is frames - 1, wherever one exists (no prime
    factor of frames - 1 over 16); otherwise a ValueError with counts that work."""
    from svd_inbetween.cli.film import MAX_MULTIPLIER, film_prompt, multipliers

    def largest_prime_factor(n: int) -> int:
        p, last = 2, 1
        while n > 1:
            while n % p == 0:
                n, last = n // p, p
            p += 1
        return last

    assert multipliers(25) == [2, 2, 2, 3] and multipliers(5) == [2, 2] and multipliers(12) == [11]
    assert multipliers(3) == [2] and multipliers(17) == [2, 2, 2, 2]
    for frames in range(3, 400):
        if largest_prime_factor(frames - 1) > MAX_MULTIPLIER:
            with pytest.raises(ValueError, match=f"{frames} frames is not one"):
                multipliers(frames)
            continue
        ms = multipliers(frames)
        assert math.prod(ms) == frames - 1 and all(2 <= m <= MAX_MULTIPLIER for m in ms), (frames, ms)
    for frames in (0, 1, 2):
        with pytest.raises(ValueError):
            multipliers(frames)
    p = film_prompt("film.safetensors", 25, 7, ("2", "3"))
    passes = [n for n in p.values() if n["class_type"] == "FrameInterpolate"]
    assert [n["inputs"]["multiplier"] for n in passes] == [2, 2, 2, 3]
    assert [nid for nid, n in p.items() if n["class_type"] == "LoadImage"] == ["2", "3"]
    assert p["film_video"]["inputs"]["images"] == ["film_pass_3", 0] and p["film_video"]["inputs"]["fps"] == 7.0


def test_fps_flag_keeps_an_interpolated_video_at_its_speed():
    """--fps is the generated video's rate: a CreateVideo fed by FrameInterpolate x2 (svd_inbetween_film) gets twice
    it, other CreateVideos and the pack's fps input get it as given."""
    import json

    from svd_inbetween.cli.workflow import apply_flags, interpolation_factor
    with open(os.path.join(os.path.dirname(__file__), "..", "workflows", "api", "svd_inbetween_film.json")) as f:
        film = json.load(f)
    with open(os.path.join(os.path.dirname(__file__), "..", "workflows", "api", "svd_inbetween_gi.json")) as f:
        full = json.load(f)
    apply_flags(film, {"fps": 10})
    apply_flags(full, {"fps": 10})
    videos = [n for n in film.values() if n["class_type"] == "CreateVideo"]
    assert [v["inputs"]["fps"] for v in videos] == [20.0]
    assert [n["inputs"]["fps"] for n in film.values() if n["class_type"] == "SVDInbetweenConditioning"] == [10]
    assert [n["inputs"]["fps"] for n in full.values() if n["class_type"] == "CreateVideo"] == [10.0]
    p = {"1": {"class_type": "FrameInterpolate", "inputs": {"images": ["2", 0], "multiplier": 3}},
         "2": {"class_type": "FrameInterpolate", "inputs": {"images": ["4", 0], "multiplier": 4}},
         "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 7.0}}}
    assert interpolation_factor(p, "3") == 12
