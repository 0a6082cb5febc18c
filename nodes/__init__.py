"""The pack's V3 nodes. Node IDs are permanent public API."""
from __future__ import annotations


def node_list() -> list:
    from .conditioning import SVDInbetweenConditioning
    from .sampler import SVDInbetweenGuider, SVDInbetweenRecurrentEuler, SVDInbetweenSampler
    from .weights import SVDInbetweenLoadBackwardWeights
    return [SVDInbetweenConditioning, SVDInbetweenLoadBackwardWeights, SVDInbetweenSampler,
            SVDInbetweenGuider, SVDInbetweenRecurrentEuler]
