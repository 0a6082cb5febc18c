"""Unit: the Wan keyframe layouts (wan/layout.py, wan/pieces.py's clip) against the AFB authors' formulation
(tests/afb_reference.py), and the anchor rule (wan/anchor.py) as identities."""
from __future__ import annotations

import pytest
import torch

import afb_reference as ref
from svd_inbetween.wan import anchor, layout
from svd_inbetween.wan.layout import LayoutError, place
from svd_inbetween.wan.pieces import keyframe_clip

AUTHORS = [  # (keyframes, frames, their middle_frame_position(s)): their scripts' settings and a spread around them
    (2, 82, None), (2, 26, None), (2, 6, None), (2, 2, None),
    (3, 83, 15), (3, 83, 5), (3, 83, 10), (3, 83, 0), (3, 83, 19), (3, 27, 3), (3, 7, 1),
    (4, 81, (5, 10)), (4, 81, (1, 1)), (4, 41, (2, 7)),
]


def ours(k: int, frames: int, m):
    """The pack's layout for the authors' case: separate for 2 and 3 keyframes, inside for their 4-keyframe
    ablation (standard layout, plain encode)."""
    positions = ref.keyframe_positions(frames, k, m)
    return place("separate" if k < 4 else "inside", frames, k, positions[1:-1] or None, "test")


@pytest.mark.parametrize("k,frames,m", AUTHORS)
def test_mask_and_noise_frames_equal_the_authors(k, frames, m):
    lay = ours(k, frames, m)
    theirs = ref.mask(frames, k, m)[:, :, 0, 0]
    assert lay.latent_frames == ref.noise_frames(frames, k) == theirs.shape[1]
    assert lay.positions == ref.keyframe_positions(frames, k, m)
    assert torch.equal(lay.known(), theirs), (lay.known(), theirs)


@pytest.mark.parametrize("k,frames,m", AUTHORS)
def test_vae_input_equals_the_authors(k, frames, m):
    lay = ours(k, frames, m)
    g = torch.Generator().manual_seed(k * 100 + frames)
    images = torch.rand(k, 8, 16, 3, generator=g)
    clip = keyframe_clip(lay, images) * 2 - 1  # [N, H, W, 3] in [0, 1] -> their [3, N, H, W] in [-1, 1]
    theirs = ref.vae_input([i.movedim(-1, 0) * 2 - 1 for i in images], frames, m)
    assert torch.equal(clip.movedim(-1, 0), theirs)


def test_the_pieces_are_the_authors_latent_frames():
    """Each piece is 1 + 4j frames and starts at a keyframe; the pieces' latent frames add up to their noise's."""
    for k, frames, m in AUTHORS:
        lay = ours(k, frames, m)
        lat = lay.latent_pieces()
        assert lat[0][0] == 0 and lat[-1][1] == ref.noise_frames(frames, k)
        for (a, b), (la, lb) in zip(lay.pieces(), lat):
            assert (b - a - 1) % 4 == 0 and lb - la == 1 + (b - a - 1) // 4
        if k < 4:
            assert [a for a, _ in lay.pieces()] == list(lay.positions)
            assert len(lay.pieces()) == k


@pytest.mark.parametrize("k", [2, 3, 4])
def test_frame_counts_that_fit_are_the_ones_the_authors_keep(k):
    kind = "separate" if k < 4 else "inside"
    for frames in range(k, 120):
        assert layout.fits(kind, frames, k) == (ref.rounded_frames(frames, k) == frames), frames


def test_a_count_that_does_not_fit_names_the_counts_that_do():
    with pytest.raises(LayoutError, match=r"Node: frames 81 .*'separate'.*3 \(mod 4\).*use 79 or 83"):
        place("separate", 81, 3, None, "Node")
    with pytest.raises(LayoutError, match=r"frames 82 .*'inside'.*use 81 or 85"):
        place("inside", 82, 2, None, "Node")
    with pytest.raises(LayoutError, match=r"use 2 or 6"):
        place("separate", 4, 2, None, "Node")
    for kind, frames, k in (("separate", 81, 3), ("inside", 82, 2), ("separate", 83, 2), ("separate", 50, 5)):
        for count in layout.nearest_counts(kind, frames, k):
            assert layout.fits(kind, count, k), (kind, frames, k, count)


def test_bad_anchor_positions_are_errors():
    with pytest.raises(LayoutError, match="outside the clip"):
        place("separate", 83, 3, (82,), "Node")
    with pytest.raises(LayoutError, match="outside the clip"):
        place("inside", 81, 3, (0,), "Node")
    with pytest.raises(LayoutError, match="collides"):
        place("inside", 81, 4, (40, 40), "Node")
    with pytest.raises(LayoutError, match="collides"):
        place("separate", 84, 4, (41, 21), "Node")
    with pytest.raises(LayoutError, match="2 anchor_position value"):
        place("separate", 83, 3, (5, 9), "Node")


def test_separate_anchors_move_to_the_nearest_frame_the_layout_holds():
    assert place("separate", 83, 3, (61,), "t").positions == (0, 61, 82)  # their m = 15
    assert place("separate", 83, 3, (60,), "t").positions == (0, 61, 82)
    assert place("separate", 83, 3, (59,), "t").positions == (0, 57, 82)  # a tie goes earlier
    assert place("separate", 83, 3, (81,), "t").positions == (0, 81, 82)  # the last frame before the end
    assert place("separate", 84, 4, (2, 3), "t").positions == (0, 1, 2, 83)
    assert place("inside", 81, 3, (33,), "t").positions == (0, 33, 80)


def test_even_positions():
    assert layout.even_positions("separate", 83, 3) == (0, 41, 82)
    assert layout.even_positions("separate", 86, 6) == (0, 17, 34, 51, 68, 85)
    assert layout.even_positions("inside", 81, 4) == (0, 27, 53, 80)
    for kind, frames, k in (("separate", 86, 6), ("separate", 83, 3), ("inside", 81, 4)):
        lay = place(kind, frames, k, None, "t")
        assert place(kind, frames, k, lay.positions[1:-1], "t") == lay


def test_strength_scales_each_keyframes_slots():
    lay = place("inside", 21, 3, (10,), "t")
    known = lay.known((1.0, 0.25, 0.5))
    assert known[:, 0].tolist() == [1.0] * 4
    assert known.flatten().tolist().count(0.25) == 1 and known[:, -1].tolist() == [0, 0, 0, 0.5]
    assert float(known[(10 + 3) % 4, (10 + 3) // 4]) == 0.25


# ---------------------------------------------------------------- the anchor rule


def l1(a, b):
    return (a - b).abs().flatten(1).mean(1)


def smooth_clip(frames: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 1, 16, 16, 3, generator=g)
    t = torch.linspace(0, 1, frames)[:, None, None, None]
    return a * (1 - t) + b * t


@pytest.mark.parametrize("at", [1, 7, 15, 28])
def test_a_frame_replaced_by_noise_is_the_breakpoint(at):
    clip = smooth_clip()
    clip[at] = torch.rand(clip.shape[1:], generator=torch.Generator().manual_seed(at))
    assert anchor.breakpoint(anchor.neighbour_scores(clip, l1), edge=1) == at


def test_time_reversal_mirrors_the_breakpoint():
    clip = smooth_clip(25)
    clip[9] = torch.rand(clip.shape[1:], generator=torch.Generator().manual_seed(1))
    b = anchor.breakpoint(anchor.neighbour_scores(clip, l1), 1)
    rb = anchor.breakpoint(anchor.neighbour_scores(clip.flip(0), l1), 1)
    assert (b, rb) == (9, 25 - 1 - 9)
    scores = anchor.neighbour_scores(clip, l1)
    assert torch.allclose(anchor.neighbour_scores(clip.flip(0), l1), scores.flip(0), rtol=0, atol=1e-12)


def test_the_anchor_is_the_reverse_clips_frame_at_the_mirrored_position():
    forward, reverse = smooth_clip(82, 0), smooth_clip(82, 1)
    forward[50] = 0.0
    image, position, scores = anchor.pick_anchor(forward, reverse, l1)
    assert position == 50 and scores.shape == (82,)
    assert torch.equal(image[0], reverse[31])
    longer = smooth_clip(163, 2)  # a reverse clip of twice the frames: the same moment
    image, position, _ = anchor.pick_anchor(forward, longer, l1)
    assert torch.equal(image[0], longer[round((1 - 50 / 81) * 162)])


def test_edge_keeps_the_breakpoint_away_from_the_ends():
    clip = smooth_clip(20)
    clip[1] = 0.0
    assert anchor.breakpoint(anchor.neighbour_scores(clip, l1), edge=1) == 1
    assert anchor.breakpoint(anchor.neighbour_scores(clip, l1), edge=4) >= 4
