"""Named random streams from one root seed.

Every component asks for its own stream by name; streams are independent of each other and of the
order in which they are requested, so adding a component never shifts another's draws. This is
what makes variants of one replication share users, arrivals and response noise (common random
numbers).

>>> a = Streams(7).generator("arrivals").random()
>>> b = Streams(7).generator("arrivals").random()
>>> a == b
True
>>> a == Streams(7).generator("responses").random()
False
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["Streams"]


class Streams:
    """Factory of independent, reproducible generators keyed by ``(seed, name)``."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """The SeedSequence behind stream ``name`` (stable across Python runs)."""
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(zlib.crc32(name.encode()),))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for stream ``name``; the same name always starts at the same state."""
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))

    def integer_seed(self, name: str) -> int:
        """A 63-bit integer seed for libraries that take an int (torch, River, MABWiser)."""
        return int(self.seed_sequence(name).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
