"""Unit: training data (frame folders and PyAV videos), clip sampling, per-process sample ids."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image


def moving_square(frames: int, width: int, height: int, step: int = 4, color=(255, 40, 0), offset: int = 0):
    """uint8 frames [T, H, W, 3]: a square sliding right over a dark background."""
    out = np.full((frames, height, width, 3), 20, np.uint8)
    size = max(4, min(width, height) // 4)
    top = (height - size) // 2
    for t in range(frames):
        left = (offset + t * step) % max(1, width - size)
        out[t, top:top + size, left:left + size] = color
    return out


def write_frames(folder: str, video: np.ndarray, ext: str = ".png") -> str:
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(video):
        Image.fromarray(frame).save(os.path.join(folder, f"frame_{i}{ext}"))  # unpadded: natural order matters
    return folder


def write_mp4(file: str, video: np.ndarray, fps: int = 8) -> str:
    import av
    with av.open(file, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return file


@pytest.fixture()
def data_dir(tmp_path):
    write_frames(str(tmp_path / "clips" / "a"), moving_square(12, 80, 48))
    write_frames(str(tmp_path / "clips" / "short"), moving_square(3, 80, 48), ext=".jpg")
    write_mp4(str(tmp_path / "b.mp4"), moving_square(20, 80, 48, step=2, color=(0, 200, 255)))
    return str(tmp_path)


def test_scan_finds_frame_folders_and_videos(data_dir):
    from svd_inbetween.weights.train_data import scan
    found = {os.path.relpath(s.path, data_dir): s.frame_count for s in scan(data_dir)}
    assert found == {os.path.join("clips", "a"): 12, os.path.join("clips", "short"): 3, "b.mp4": 20}
    folder = next(s for s in scan(data_dir) if s.path.endswith("a"))
    assert [os.path.basename(f) for f in folder.files[:3]] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert os.path.basename(folder.files[10]) == "frame_10.png"


def test_clip_from_frames_matches_source_with_stride(data_dir):
    from svd_inbetween.weights.train_data import ClipDataset
    ds = ClipDataset(data_dir, frames=4, width=80, height=48, stride=3)
    assert [os.path.basename(s.path) for s in ds.sources] == ["b.mp4", "a"]  # 'short' (3 frames) is skipped
    clip = ds.clip(1, start=2)
    assert clip.shape == (4, 48, 80, 3) and clip.dtype.__str__() == "torch.float32"
    want = moving_square(12, 80, 48)[[2, 5, 8, 11]].astype(np.float32) / 255
    assert np.abs(clip.numpy() - want).max() < 1e-6


def test_clip_from_mp4_decodes_the_right_frames(data_dir):
    from svd_inbetween.weights.train_data import ClipDataset
    ds = ClipDataset(data_dir, frames=3, width=80, height=48, stride=5)
    clip = ds.clip(0, start=4).numpy()
    want = moving_square(20, 80, 48, step=2, color=(0, 200, 255))[[4, 9, 14]].astype(np.float32) / 255
    assert np.abs(clip - want).mean() < 0.03  # lossy mpeg4
    # the square's left edge moves 2 px per source frame: 10 px between these frames
    edges = [int(np.argmax(f[24, :, 2] > 0.5)) for f in clip]
    assert [b - a for a, b in zip(edges, edges[1:])] == [10, 10]


def test_resize_crop_keeps_aspect_and_stretch_does_not(data_dir):
    from svd_inbetween.weights.train_data import ClipDataset
    crop = ClipDataset(data_dir, 2, 32, 32, resize="crop").clip(1, 8)  # square near the centre
    stretch = ClipDataset(data_dir, 2, 32, 32, resize="stretch").clip(1, 8)
    assert crop.shape == stretch.shape == (2, 32, 32, 3)

    def square_width(img):
        cols = (img[..., 0] > 0.5).any(0).numpy()
        return int(cols.sum())
    # the 12x12 square in an 80x48 frame: crop scales by 32/48, stretch squeezes x by 32/80
    assert abs(square_width(crop[0]) - 8) <= 1
    assert abs(square_width(stretch[0]) - 5) <= 1


def test_samples_are_seeded_and_cover_sources(data_dir):
    from svd_inbetween.weights.train_data import ClipDataset
    ds = ClipDataset(data_dir, frames=4, width=40, height=24, stride=2, seed=7)
    picks = [ds.pick(i) for i in range(200)]
    assert picks == [ClipDataset(data_dir, 4, 40, 24, 2, seed=7).pick(i) for i in range(200)]
    assert picks != [ClipDataset(data_dir, 4, 40, 24, 2, seed=8).pick(i) for i in range(200)]
    assert {s for s, _ in picks} == {0, 1}
    for s, start in picks:
        assert 0 <= start <= ds.sources[s].frame_count - 7
    item = ds[3]
    assert item["id"] == 3 and item["pixels"].shape == (4, 24, 40, 3)


def test_sample_ids_partition_each_step_over_processes():
    from svd_inbetween.weights.train_data import StepSampler
    one = list(StepSampler(2, 5, batch_size=4))
    two = [list(StepSampler(2, 5, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    assert one == list(range(8, 20))
    assert sorted(two[0] + two[1]) == one
    assert two[0][:2] == [8, 9] and two[1][:2] == [10, 11]
    assert len(StepSampler(2, 5, 4, 1, 2)) == 6


def test_errors_name_the_folder_and_fix(tmp_path, data_dir):
    from svd_inbetween.weights.train_data import ClipDataset, TrainDataError
    with pytest.raises(TrainDataError, match="not a folder"):
        ClipDataset(str(tmp_path / "missing"), 4, 32, 32)
    with pytest.raises(TrainDataError, match=r"no usable clips.*lower --stride"):
        ClipDataset(data_dir, frames=14, width=32, height=32, stride=2)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(TrainDataError, match="broken.mp4"):
        ClipDataset(str(bad), 2, 32, 32)


def test_no_function_in_weights_takes_over_12_parameters():
    """The training loop takes one run object (weights/train.py _Run), as the samplers take GenerationSettings."""
    import ast
    import glob
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    over = []
    for path in glob.glob(os.path.join(repo, "weights", "*.py")):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                if n > 12:
                    over.append(f"{os.path.basename(path)}:{node.lineno} {getattr(node, 'name', 'lambda')} ({n})")
    assert not over, over
