"""Unit: the rotation maths (plain torch)."""
import torch

from svd_inbetween.attention_patch.rotation import (apply_probs, attention_probs, flip_frames, merge_heads, rot180,
                                                    split_heads)


def test_rot180_flips_both_frame_axes():
    a = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    r = rot180(a)
    for i in range(4):
        for j in range(4):
            assert torch.equal(r[..., i, j], a[..., 3 - i, 3 - j])
    assert torch.equal(rot180(r), a)


def test_flip_frames_reverses_each_video():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(10, 3)  # 2 videos of 5 frames
    f = flip_frames(x, 5)
    assert torch.equal(f[:5], x[:5].flip(0)) and torch.equal(f[5:], x[5:].flip(0))
    assert torch.equal(flip_frames(f, 5), x)


def test_heads_round_trip():
    t = torch.randn(6, 5, 4 * 8)
    assert torch.equal(merge_heads(split_heads(t, 4)), t)


def test_probs_are_row_stochastic():
    q, k = torch.randn(7, 5, 16), torch.randn(7, 5, 16)
    a = attention_probs(q, k, heads=2)
    assert a.shape == (7, 2, 5, 5)
    assert torch.allclose(a.sum(-1), torch.ones(7, 2, 5), atol=1e-6)


def test_rotated_maps_on_flipped_values_equal_flipped_attention():
    """With W' = W: attending flip(v) with rot180(A(x)) == flip(attention(x)) over time."""
    torch.manual_seed(0)
    x = torch.randn(9, 6, 32)
    wq, wk, wv = (torch.randn(32, 32) * 0.2 for _ in range(3))
    probs = attention_probs(x @ wq.T, x @ wk.T, heads=4)
    forward = apply_probs(probs, x @ wv.T)
    xf = x.flip(1)
    backward = apply_probs(rot180(probs), xf @ wv.T)
    assert torch.allclose(backward, forward.flip(1), atol=1e-6)


def test_probs_match_sdpa():
    q, k, v = torch.randn(3, 5, 16), torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    out = apply_probs(attention_probs(q, k, 2), v)
    ref = torch.nn.functional.scaled_dot_product_attention(split_heads(q, 2), split_heads(k, 2), split_heads(v, 2))
    assert torch.allclose(out, merge_heads(ref), atol=1e-5)
