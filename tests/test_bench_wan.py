"""Host: `svd-inbetween bench --wan`: the model calls of Anchor Frame Bridging and of native first-last frame,
counted in the real graphs on a tiny Wan 2.1, equal the formula; the Wan2.1-I2V-14B config is the 14B model; the
meta trace of one call runs without the N x N attention scores; the card rule."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.host

SMALL_FRAMES = {"native": 9, "forward": 10, "reverse": 10, "final": 11}  # 3, 4, 4 and 5 latent frames


def test_counted_model_calls_equal_the_formula():
    import tiny_wan
    from svd_inbetween.bench.wan import count_and_time, counts_match, formula
    # the tests' tiny VAE: it also builds on 0.3.64, whose Wan VAE branch fixes the width the bench's own cannot change
    r = count_and_time(steps=2, width=64, height=64, repeats=1, frames=SMALL_FRAMES, warmup=False,
                       vae=tiny_wan.tiny_wan_vae())
    assert r["stop"] == 1
    s = r["schemes"]
    # Euler: one apply_model call per step, cond and uncond batched in it (2 evaluations)
    assert (s["native"]["calls"], s["native"]["evaluations"]) == (2, 4)
    assert (s["afb"]["calls"], s["afb"]["evaluations"]) == (6, 12)
    assert [p["calls"] for p in s["afb"]["passes"].values()] == [2, 2, 2]
    assert (s["afb_stop"]["calls"], s["afb_stop"]["evaluations"]) == (5, 10)  # forward 2 + reverse K=1 + final 2
    assert [p["evaluations"] for p in s["afb_stop"]["passes"].values()] == [4, 2, 4]
    assert all(counts_match(r).values())
    assert s["native"]["frames"] == 9 and s["afb"]["frames"] == s["afb_stop"]["frames"] == 11
    assert all(v["sampling_s"] > 0 and v["graph_s"] >= v["sampling_s"] for v in s.values())
    authors = formula(50, 15)
    assert {k: v["evaluations"] for k, v in authors.items()} == {"native": 100, "afb": 300, "afb_stop": 230}


def wan14b_params(d=5120, f=13824, in_dim=36, out=16, text=4096, freq=256, layers=40, clip=1280):
    """WanModel's parameters written out from its layers (ComfyUI's comfy/ldm/wan/model.py, I2V)."""
    block = (4 * (d * d + d) + 2 * d          # self-attention q, k, v, o + RMS norms of q and k
             + 6 * (d * d + d) + 3 * d        # I2V cross-attention q, k, v, o, k_img, v_img + 3 RMS norms
             + 2 * d                          # norm3 (affine LayerNorm)
             + (d * f + f) + (f * d + d)      # feed-forward
             + 6 * d)                         # modulation
    rest = (in_dim * d * 4 + d                                     # patch embedding (1, 2, 2)
            + text * d + d + d * d + d + freq * d + d + d * d + d  # text and time embeddings
            + d * 6 * d + 6 * d + d * out * 4 + out * 4 + 2 * d    # time projection, head
            + 2 * clip + clip * clip + clip + clip * d + d + 2 * d)  # img_emb (MLPProj with its LayerNorms)
    return layers * block + rest, block


def test_the_14b_config_is_wan21_i2v_14b_and_its_weight_bytes():
    from svd_inbetween.bench.wan_memory import WAN21_I2V_14B, wan_meta_model
    total, block = wan14b_params()
    assert total == 16_394_878_784  # the 32.8 GB fp16 / 16.4 GB fp8 checkpoints
    patch = 36 * 5120 * 4 + 5120  # ComfyUI keeps the patch embedding in fp32
    for weights, nbytes in (("fp16", 2 * total + 2 * patch), ("fp8", total + 3 * patch)):
        dm = wan_meta_model(WAN21_I2V_14B, weights)
        assert sum(p.numel() for p in dm.parameters()) == total
        assert sum(p.numel() * p.element_size() for p in dm.parameters()) == nbytes
        assert sum(p.numel() for p in dm.blocks[0].parameters()) == block
        assert len(dm.blocks) == 40 and dm.num_heads == 40


def test_meta_trace_of_a_call_runs_without_the_attention_scores():
    from svd_inbetween.bench.wan_memory import GIB, WAN21_I2V_14B, cards, wan_memory
    two_blocks = dict(WAN21_I2V_14B, num_layers=2)
    m = wan_memory(two_blocks, latent_frames={"native": 21, "afb_82": 22, "afb_83": 23})
    _, block = wan14b_params()
    for w, fmt in m["formats"].items():
        p = fmt["peaks"]
        assert fmt["block"] == 2 * block  # in the compute dtype, fp16 or bf16
        assert p["native/b1"] < p["afb_82/b1"] < p["afb_83/b1"]
        for t in ("native", "afb_82", "afb_83"):
            assert 1.8 < p[f"{t}/b2"] / p[f"{t}/b1"] <= 2.01, (w, t)
        # 21 x 30 x 52 = 32760 tokens: one layer's scores in fp16 would be 40 x 32760^2 x 2 bytes = 80 GiB
        assert 1 * GIB < p["native/b1"] < 8 * GIB, (w, p)
    assert m["formats"]["fp8"]["weights"] < 0.51 * m["formats"]["fp16"]["weights"]
    verdicts = cards(m)
    assert verdicts["fp16/native"]["80"]["mode"] == "resident"


def test_card_rule():
    from svd_inbetween.bench.wan_memory import GIB, card_verdict
    fmt = {"weights": 20 * GIB, "block": GIB // 2,
           "peaks": {"native/b2": 6 * GIB, "native/b1": 3 * GIB, "afb_83/b2": 7 * GIB, "afb_83/b1": 3.5 * GIB}}
    assert card_verdict(fmt, "native", 27) == {"mode": "resident", "batch": 2, "streamed": 0}  # 26 GiB: 20 + 6
    assert card_verdict(fmt, "afb", 27) == {"mode": "resident", "batch": 1, "streamed": 0}  # 20 + 7 > 26 >= 23.5
    v = card_verdict(fmt, "afb", 16)  # 15 GiB: the b2 peak + 2 half-GiB blocks fit, 7 GiB of weights stay resident
    assert v["mode"] == "offload" and v["batch"] == 2 and v["streamed"] == 13 * GIB
    assert card_verdict(fmt, "afb", 6)["batch"] == 1 and card_verdict(fmt, "afb", 5)["mode"] == "no"


def test_cli_bench_wan_last_line_is_json(capsys, caplog, monkeypatch):
    import json

    import comfy.utils
    from svd_inbetween.bench.wan import host_ok
    from svd_inbetween.cli import main
    if host_ok():  # 0.3.64: the command says why it cannot run there, and exits 2
        assert main(["bench", "--wan", "--steps", "2", "--repeats", "1", "--no-full-size-accounting"]) == 2
        assert "needs ComfyUI 0.8 or newer" in caplog.text
        return
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_ENABLED", comfy.utils.PROGRESS_BAR_ENABLED)
    assert main(["bench", "--wan", "--frames", "7"]) == 2  # not 1 (mod 4)
    rc = main(["bench", "--wan", "--frames", "5", "--steps", "2", "--repeats", "1", "--no-full-size-accounting"])
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])
    assert rc == 0
    assert data["frames"] == {"native": 5, "forward": 6, "reverse": 6, "final": 7}
    assert {k: v["evaluations"] for k, v in data["schemes"].items()} == {"native": 4, "afb": 12, "afb_stop": 10}
    assert any(line.startswith("  AFB, reverse K=15") and " 230 " in line for line in lines)
