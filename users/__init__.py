"""The ground truth: population, catalogue, behaviour and arrivals. Nothing here is visible to a
policy; the engine reaches it only through :class:`sim.domain.World`."""

from users.world import SimulatedWorld

__all__ = ["SimulatedWorld"]
