"""The naive reference: the same world and policy, served one request at a time by one SimPy
process per user. It is what recloop's micro-batched engine is measured against."""

from __future__ import annotations

import time as wallclock

import numpy as np

from sim.domain import Requests
from sim.scenario.spec import Scenario
from sim.serving.rng import Streams
from sim.serving.runner import assemble
from users.arrivals import REQUEST_UNIFORMS, SLOT_NORMALS, SLOT_UNIFORMS, RequestBlock
from users.world import WorldBatch

DAY = 86400.0


def run_naive(scenario: Scenario, wall_limit: float = 120.0) -> dict[str, float]:
    """Serve ``scenario`` request by request; stop after ``wall_limit`` seconds of wall time.

    Returns requests served, simulated seconds reached and wall seconds.
    """
    parts = assemble(scenario)
    env, world, stack, log = parts.env, parts.world, parts.stack, parts.log
    rng = Streams(scenario.seed).generator("naive")
    k = scenario.stack.slate_size
    session_spec = scenario.world.users.session
    diurnal = world.arrivals.diurnal
    peak = 1.0 + scenario.world.users.diurnal.amplitude
    served = [0]
    started = wallclock.perf_counter()
    session_ids = iter(range(1 << 62))

    def user(uid: int, rate: float):
        while True:
            # next session start by thinning the diurnal rate
            yield env.timeout(rng.exponential(1.0 / (rate * peak)))
            if rng.random() * peak >= diurnal(np.array([env.now]))[0]:
                continue
            n_requests = rng.geometric(1.0 / session_spec.requests_mean)
            session = next(session_ids)
            for index in range(n_requests):
                if index:
                    gap = session_spec.gap_min + rng.exponential(session_spec.gap_mean or 0.0)
                    yield env.timeout(gap)
                if not np.isinf(world.churned_at[uid]):
                    return
                block = RequestBlock(
                    time=np.array([env.now]),
                    user=np.array([uid], np.int32),
                    session=np.array([session], np.int64),
                    first=np.array([index == 0]),
                    last=np.array([index == n_requests - 1]),
                    slot_uniform=rng.random((1, k, SLOT_UNIFORMS), dtype=np.float32),
                    slot_normal=rng.standard_normal((1, k, SLOT_NORMALS), dtype=np.float32),
                    request_uniform=rng.random((1, REQUEST_UNIFORMS), dtype=np.float32),
                )
                requests = Requests(block.time, block.user, block.session, k)
                for layer in parts.layers:  # what the engine does before every window
                    layer.before_window(env.now)
                slates, versions = stack.rank(
                    requests, world.catalog_view(), world.n_users, env.now
                )
                responses = world.respond(WorldBatch(requests, block), slates)
                log.append_slates(requests, slates, responses, versions)
                served[0] += 1
                if responses.abandoned[0]:
                    break

    rates = world.population.sessions_per_day / DAY
    for uid in range(world.n_users):
        env.process(user(uid, float(rates[uid])))

    def watchdog():
        while wallclock.perf_counter() - started < wall_limit:
            yield env.timeout(60.0)
        raise StopSimulation

    class StopSimulation(Exception):
        pass

    env.process(watchdog())
    try:
        env.run(until=scenario.end)
    except StopSimulation:
        pass
    wall = wallclock.perf_counter() - started
    return {"requests": served[0], "simulated_seconds": env.now, "wall_seconds": wall}
