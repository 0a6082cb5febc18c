"""Unit: keyframe-chain layout, frame-count parsing and window fusion, plain torch."""
from __future__ import annotations

import pytest
import torch

from svd_inbetween.samplers.validation import InbetweenInputError, check_images, labelled
from svd_inbetween.samplers.windows import boundaries, chain_windows, fuse_windows, parse_frame_counts

NODE = "SVDInbetweenChain"


def test_windows_share_exactly_one_frame_and_keyframes_sit_at_their_ends():
    w = chain_windows([5, 3, 4])
    assert w == [(0, 5), (4, 7), (6, 10)]
    assert boundaries(w) == [0, 4, 6, 9]
    assert chain_windows([25]) == [(0, 25)] and boundaries([(0, 25)]) == [0, 24]


@pytest.mark.parametrize("text,segments,want", [("25", 3, [25, 25, 25]), ("25, 14,25", 3, [25, 14, 25]),
                                                ("7;9", 2, [7, 9]), (14, 1, [14])])
def test_parse_frame_counts(text, segments, want):
    assert parse_frame_counts(text, segments) == want


@pytest.mark.parametrize("text,segments,match", [("25,25", 3, "2 frame counts for 3 segments"),
                                                 ("2", 1, "at least 3"), ("25,x", 2, "whole numbers"),
                                                 ("", 1, "0 frame counts")])
def test_bad_frame_counts_name_node_and_input(text, segments, match):
    with pytest.raises(InbetweenInputError, match=match) as e, labelled(NODE):
        parse_frame_counts(text, segments)
    assert str(e.value).startswith(f"{NODE}: input 'frames'")


def test_fuse_windows_means_shared_frames_and_copies_the_rest_exactly():
    g = torch.Generator().manual_seed(0)
    w = chain_windows([3, 4])
    a, b = torch.randn(3, 2, 2, 2, generator=g), torch.randn(4, 2, 2, 2, generator=g)
    out = fuse_windows([a, b], w)
    assert out.shape == (6, 2, 2, 2)
    assert torch.equal(out[:2], a[:2]) and torch.equal(out[3:], b[1:])
    assert torch.allclose(out[2], (a[2] + b[0]) / 2)
    assert fuse_windows([a], [(0, 3)]) is a


def test_check_images():
    with pytest.raises(InbetweenInputError, match="input 'images'.*at least 2 keyframes"):
        check_images(torch.rand(1, 8, 8, 3))
    with pytest.raises(InbetweenInputError, match="NaN"):
        check_images(torch.full((2, 8, 8, 3), float("nan")))
    check_images(torch.rand(3, 8, 8, 3))
