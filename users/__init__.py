"""The ground truth: population, catalogue, behaviour and arrivals. Nothing here is visible to a
policy; the engine reaches it only through the :class:`sim.domain.UserModel` protocol, which
the user models implement: the parametric world, the table world, and plug-ins."""

from users.registry import available, make_user_model, register, resolve
from users.table_world import TableWorld
from users.world import SimulatedWorld, WorldBatch

__all__ = [
    "SimulatedWorld",
    "TableWorld",
    "WorldBatch",
    "register",
    "resolve",
    "available",
    "make_user_model",
]
