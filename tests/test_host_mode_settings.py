"""Host: the nodes' steps 0 and cfg 0 are the mode's own settings, bit for bit; the backward-weights loader without
its file lets every mode that does not use the weights run, and the modes that do stop before sampling, naming it."""
from __future__ import annotations

import pytest
import torch

from fixtures_host import sample_custom_advanced

pytestmark = pytest.mark.host
FAST = dict(seed=3, recurrence=0, recurrence_ratio=0.5, forward_weight=0.5, execution="batched")


def sampler_node(tiny, model, mode, steps, cfg, **kw):
    from svd_inbetween.nodes.sampler import SVDInbetweenSampler
    ps, ns, pe, ne, lat = tiny.conds
    return SVDInbetweenSampler.execute(model, ps, ns, pe, ne, lat, steps=steps, cfg=cfg, mode=mode,
                                       **{**FAST, **kw}).args[0]["samples"]


@pytest.mark.parametrize("mode", ["vibid", "mpd"])
def test_sampler_steps_and_cfg_zero_are_the_modes_own(tiny, mode):
    from svd_inbetween.attention_patch.modes import mode_of
    spec = mode_of(mode)
    model = tiny.model_gi if spec.finetuned else tiny.model
    own = sampler_node(tiny, model, mode, 0, 0.0)
    explicit = sampler_node(tiny, model, mode, spec.steps, spec.cfg)
    assert (own - explicit).abs().max().item() == 0.0, mode
    if mode == "vibid":  # the identity can fail: other settings give another video
        assert not torch.equal(own, sampler_node(tiny, model, mode, spec.steps, 2.0))
        assert not torch.equal(own, sampler_node(tiny, model, mode, 10, spec.cfg))


def test_guider_cfg_zero_is_the_modes_own(tiny):
    from svd_inbetween.nodes.sampler import SVDInbetweenGuider, SVDInbetweenMPDSampler
    ps, ns, pe, ne, lat = tiny.conds
    guider = lambda cfg: SVDInbetweenGuider.execute(tiny.model, ps, ns, pe, ne, cfg, "mpd", 0.5, "batched").args[0]  # noqa: E731
    sampler = SVDInbetweenMPDSampler.execute().args[0]
    own, explicit = guider(0.0), guider(1.0)
    assert own.cfg == 1.0
    a = sample_custom_advanced(tiny.model, own, sampler, lat, seed=5, steps=4)
    b = sample_custom_advanced(tiny.model, explicit, sampler, lat, seed=5, steps=4)
    assert (a - b).abs().max().item() == 0.0


def test_loader_without_its_file_passes_the_model_on_and_gi_names_the_file(tiny):
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    from svd_inbetween.samplers.validation import InbetweenInputError as InputError
    missing = "no_such_file.safetensors"
    assert SVDInbetweenLoadBackwardWeights.validate_inputs(weights=missing) is True
    passed = SVDInbetweenLoadBackwardWeights.execute(tiny.model, missing).args[0]
    # a weights-free mode runs from the passed-on model exactly as from the model itself
    for mode in ("vibid", "mpd"):
        assert torch.equal(sampler_node(tiny, passed, mode, 2, 1.0), sampler_node(tiny, tiny.model, mode, 2, 1.0))
    for mode in ("gi", "vibid_gi", "mpd_gi"):
        with pytest.raises(InputError) as e:
            sampler_node(tiny, passed, mode, 2, 2.0)
        msg = str(e.value)
        assert msg.startswith("SVDInbetweenSampler: input 'model': ") and missing in msg, msg
        assert "SVDInbetweenLoadBackwardWeights' input 'weights'" in msg and "models/svd_inbetween/" in msg, msg
    # a model with weights keeps them through a loader whose file is missing
    kept = SVDInbetweenLoadBackwardWeights.execute(tiny.model_gi, missing).args[0]
    assert torch.equal(sampler_node(tiny, kept, "gi", 2, 2.0), sampler_node(tiny, tiny.model_gi, "gi", 2, 2.0))


def test_base_checkpoint_missing_is_still_refused_at_queue_time():
    from svd_inbetween.nodes.weights import SVDInbetweenLoadBackwardWeights
    msg = SVDInbetweenLoadBackwardWeights.validate_inputs("x.safetensors", "svd_gone.safetensors")
    assert isinstance(msg, str) and "'base_checkpoint'" in msg and "svd_gone.safetensors" in msg
