"""The pack's V3 nodes. Node IDs are permanent public API."""
from __future__ import annotations


def node_list() -> list:
    from .chain import SVDInbetweenChain
    from .conditioning import SVDInbetweenConditioning
    from .sampler import (SVDInbetweenGuider, SVDInbetweenMPDSampler, SVDInbetweenRecurrentEuler, SVDInbetweenSampler,
                          SVDInbetweenViBiDSampler)
    from .wan import SVDInbetweenWanAnchor, SVDInbetweenWanDecode, SVDInbetweenWanKeyframes
    from .weights import SVDInbetweenLoadBackwardWeights
    return [SVDInbetweenConditioning, SVDInbetweenLoadBackwardWeights, SVDInbetweenSampler,
            SVDInbetweenGuider, SVDInbetweenRecurrentEuler, SVDInbetweenViBiDSampler, SVDInbetweenMPDSampler,
            SVDInbetweenChain, SVDInbetweenWanKeyframes, SVDInbetweenWanDecode,
            SVDInbetweenWanAnchor]
