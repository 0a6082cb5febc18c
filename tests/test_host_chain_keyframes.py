"""Host: SVDInbetweenChain's one-keyframe-per-socket inputs (keyframe_1..6) against its `images` batch."""
from __future__ import annotations

import pytest
import torch

from test_host_chain import fitted, images, model_for, settings

pytestmark = pytest.mark.host


def run(tiny, images_batch=None, **keyframes):
    from svd_inbetween.nodes.chain import SVDInbetweenChain
    args = settings(frames="3, 4")
    out = SVDInbetweenChain.execute(model_for(tiny, args["mode"]), tiny.clip_vision, tiny.vae, images_batch,
                                    **args, **keyframes)
    return out.args[0], out.args[1]["samples"]


def test_keyframe_sockets_equal_the_batch_even_with_different_sizes(tiny):
    a, b = images(2, seed=4)
    small = torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(5))  # another size and aspect
    # the loop A, B, A as the shipped chain workflow wires it: one LoadImage feeding two sockets
    pixels, latent = run(tiny, keyframe_1=a, keyframe_2=small, keyframe_3=a)
    ref_pixels, ref = run(tiny, torch.stack([fitted(a), fitted(small), fitted(a)]))
    assert torch.equal(latent, ref) and torch.equal(pixels, ref_pixels)
    for frame, key in ((0, a), (2, small), (5, a)):  # fitting an already fitted keyframe changed nothing
        assert torch.equal(pixels[frame], fitted(key)), frame
    # same-size keyframes are batched as they are: identical to the batch input
    pixels2, latent2 = run(tiny, keyframe_1=a, keyframe_2=b, keyframe_4=a)  # unconnected keyframe_3 is skipped
    ref_pixels2, ref2 = run(tiny, torch.cat([a, b, a]))
    assert torch.equal(latent2, ref2) and torch.equal(pixels2, ref_pixels2)


@pytest.mark.parametrize("batch,keys,name,match", [
    (True, ("keyframe_1",), "keyframe_1", "not both"),
    (False, ("keyframe_1",), "keyframe_1", "at least 2 keyframes"),
    (False, (), "keyframe_1", "no keyframes"),
])
def test_keyframe_errors_name_node_and_input(tiny, batch, keys, name, match):
    from svd_inbetween.samplers.validation import InbetweenInputError
    a, b = images(2)
    given = {k: a for k in keys}
    with pytest.raises(InbetweenInputError, match=match) as e:
        run(tiny, torch.cat([a, b]) if batch else None, **given)
    assert str(e.value).startswith(f"SVDInbetweenChain: input '{name}'")
