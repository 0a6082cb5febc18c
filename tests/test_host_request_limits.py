"""Host: a request's shape is checked before any tensor is made (samplers/request.py): one frame cap and one size rule
for every node, crops that cannot come out empty, and a request no execution fits on this machine refused with the
figure. Each case here is a value a shared server's client can send that once ended in torch's or the allocator's
error; the shrunk examples of tests/test_host_fuzz.py land here too."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_host import FRAMES, SIZE, keyframes

pytestmark = pytest.mark.host


def errors(fn) -> str:
    from svd_inbetween.samplers.validation import InbetweenInputError
    with pytest.raises(InbetweenInputError) as e:
        fn()
    return str(e.value)


def conditioning(tiny, a=None, b=None, width=SIZE, height=SIZE, frames=FRAMES, resize="crop"):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    ka, kb = keyframes()
    return SVDInbetweenConditioning.execute(tiny.clip_vision, tiny.vae, ka if a is None else a, kb if b is None else b,
                                            width, height, frames, 127, 7, 0.0, resize, 0).args


def chain(tiny, frames="5", n=3, width=SIZE, height=SIZE, resize="crop", model=None, **images):
    from svd_inbetween.nodes.chain import SVDInbetweenChain
    g = torch.Generator().manual_seed(0)
    keys = torch.rand(n, SIZE, SIZE, 3, generator=g)
    return SVDInbetweenChain.execute(model or tiny.model, tiny.clip_vision, tiny.vae, None if images else keys,
                                     width=width, height=height, frames=frames, motion_bucket_id=127, fps=7,
                                     augmentation_level=0.0, resize=resize, seed=0, steps=1, cfg=1.0, mode="vibid",
                                     recurrence=0, recurrence_ratio=0.5, forward_weight=0.5, execution="batched",
                                     **images).args


def test_the_size_rule_is_the_hosts():
    import nodes
    from svd_inbetween.samplers.request import MAX_SIZE
    assert MAX_SIZE == nodes.MAX_RESOLUTION


def test_chain_frames_share_the_conditionings_cap(tiny):
    from svd_inbetween.nodes.conditioning import SVDInbetweenConditioning
    from svd_inbetween.samplers.request import MAX_FRAMES
    frames = next(i for i in SVDInbetweenConditioning.define_schema().inputs if i.id == "video_frames")
    assert frames.max == MAX_FRAMES
    # once a TypeError from inside torch.zeros (integer overflow)
    msg = errors(lambda: chain(tiny, frames="9" * 40))
    assert msg.startswith("SVDInbetweenChain: input 'frames': makes a video of ") and str(MAX_FRAMES) in msg, msg
    # each segment under the cap, the whole chain over it
    msg = errors(lambda: chain(tiny, frames="2049"))
    assert "makes a video of 4097 frames" in msg, msg
    assert chain(tiny, frames="3")[0].shape[0] == 5  # 3 + 3 - 1 frames


def test_an_unknown_resize_is_the_packs_input_error(tiny):
    """Found by tests/test_host_fuzz.py on ComfyUI 0.3.64, which does not check a V3 combo's value: a ValueError from
    inside the keyframe fitting."""
    assert "input 'resize': must be one of crop, stretch, pad, got 'nope'" in errors(
        lambda: conditioning(tiny, resize="nope"))
    a, b = keyframes()
    msg = errors(lambda: chain(tiny, resize="nope", keyframe_1=a, keyframe_2=torch.rand(1, 32, 48, 3)))
    assert msg.startswith("SVDInbetweenChain: input 'resize': must be one of"), msg
    assert errors(lambda: chain(tiny, resize="nope")).startswith("SVDInbetweenChain: input 'resize'")


def test_a_crop_that_keeps_nothing_is_refused_and_pad_takes_the_same_size(tiny):
    # width 16384, height 64 from 64x64 keyframes: once "Input and output sizes should be greater than 0"
    msg = errors(lambda: conditioning(tiny, width=16384, height=64))
    assert msg.startswith("SVDInbetweenConditioning: input 'start_image': is 64x64; cropped to the video's aspect "
                          "ratio (16384x64) it keeps 64.00x0.25 pixels"), msg
    assert "pad or stretch" in msg
    pos = conditioning(tiny, width=2048, height=64, resize="pad")[0]
    assert pos[0][1]["concat_latent_image"].shape[-2:] == (8, 256)
    # the chain's keyframe sockets, fitted one by one when their sizes differ, say which socket
    a, b = keyframes()
    tall = torch.rand(1, 64, 8, 3)
    msg = errors(lambda: chain(tiny, width=1024, height=64, keyframe_1=a, keyframe_2=tall))
    assert msg.startswith("SVDInbetweenChain: input 'keyframe_2': is 8x64;"), msg


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 4096), h=st.integers(1, 4096), width=st.integers(8, 16384), height=st.integers(8, 16384))
def test_crop_rule_matches_the_hosts_centre_crop(w, h, width, height):
    """Where the check lets a crop through, the host's own centre crop keeps at least a pixel each way."""
    from svd_inbetween.conditioning.keyframes import crop_keeps
    from svd_inbetween.samplers.request import MIN_CROP_PIXELS
    kept = crop_keeps(w, h, width, height)
    # common_upscale's centre crop: it cuts round((old - kept) / 2) from each side
    cut_x = round((w - w * min(1.0, (width / height) / (w / h))) / 2)
    cut_y = round((h - h * min(1.0, (w / h) / (width / height))) / 2)
    if min(kept) >= MIN_CROP_PIXELS:
        assert w - 2 * cut_x >= 1 and h - 2 * cut_y >= 1, (w, h, width, height, kept)


def test_a_video_beyond_the_machine_is_refused_before_any_tensor(tiny, monkeypatch):
    import comfy.model_management
    # 16384 x 16384 x 4096 frames: a 256 GiB latent and 2 x 6 GiB of keyframes; once the allocator's error
    msg = errors(lambda: conditioning(tiny, width=16384, height=16384, frames=4096, resize="stretch"))
    assert msg.startswith("SVDInbetweenConditioning: input 'video_frames': a 16384x16384 video of 4096 frames needs "
                          "268.0 GiB for its latent and keyframes alone"), msg
    # a CPU VAE cannot tile its way out of an encode the machine cannot hold (ComfyUI's own estimate)
    msg = errors(lambda: conditioning(tiny, width=16384, height=16384, frames=3, resize="stretch"))
    assert "input 'width': encoding one 16384x16384 keyframe needs about" in msg, msg
    total = comfy.model_management.get_total_memory(torch.device("cpu"))
    need = tiny.vae.memory_used_encode((1, 3, 1024, 1024), tiny.vae.vae_dtype)
    assert total > need  # this machine encodes 1024x1024; one with less memory in all refuses it
    monkeypatch.setattr(comfy.model_management, "get_total_memory", lambda dev=None, torch_total_too=False: need - 1)
    msg = errors(lambda: conditioning(tiny, width=1024, height=1024, frames=3, resize="stretch"))
    assert "input 'width': encoding one 1024x1024 keyframe needs about" in msg, msg


def test_chain_keyframes_of_several_sizes_are_not_fitted_beyond_the_machine(tiny, monkeypatch):
    """Found by tests/test_host_fuzz.py: six keyframe sockets of different sizes were fitted to 16384x16384 (two
    copies of 6 x 3 GiB) before any check, and the machine ran out of memory."""
    import tracemalloc
    sizes = [(40 + 8 * i, 64) for i in range(6)]
    keys = {f"keyframe_{i + 1}": torch.rand(1, h, w, 3) for i, (w, h) in enumerate(sizes)}
    tracemalloc.start()
    msg = errors(lambda: chain(tiny, width=16384, height=16384, resize="stretch", **keys))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert msg.startswith("SVDInbetweenChain: input 'frames': a 16384x16384 video of 21 frames needs 37.3 GiB"), msg
    assert peak < 2**26, peak  # nothing the size of the video was made


def test_a_model_call_beyond_the_machine_is_refused_before_the_first_call(tiny, monkeypatch):
    import comfy.model_management

    from svd_inbetween.nodes.sampler import SVDInbetweenSampler
    ps, ns, pe, ne, lat = tiny.conds
    calls = []
    model = tiny.model.clone()
    model.set_model_unet_function_wrapper(lambda apply, args: calls.append(1) or apply(args["input"], args["timestep"],
                                                                                       **args["c"]))
    monkeypatch.setattr(comfy.model_management, "get_total_memory", lambda dev=None, torch_total_too=False: 2**20)
    run = lambda: SVDInbetweenSampler.execute(model, ps, ns, pe, ne, lat, seed=0, steps=2, cfg=1.0,  # noqa: E731
                                              mode="vibid", recurrence=0, recurrence_ratio=0.5, forward_weight=0.5,
                                              execution="auto")
    msg = errors(run)
    assert msg.startswith(f"SVDInbetweenSampler: input 'latent_image': a {SIZE}x{SIZE} video of {FRAMES} frames needs "
                          "about ") and "even with execution lowvram" in msg, msg
    assert calls == []
    monkeypatch.undo()
    run()
    assert calls
