"""Independent 32-bit seeds derived from one seed, so each use of randomness (sampler, data order, dropout masks)
has a stream of its own that does not shift when another use draws more or fewer numbers."""

from __future__ import annotations

import numpy as np


def substream(seed: int, stream: int) -> int:
    """The seed of stream ``stream`` of ``seed`` (numpy's SeedSequence: distinct streams are uncorrelated)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])
