"""What the user wrote: the scenario schema (:mod:`~sim.scenario.spec`), reading and overriding
it (:mod:`~sim.scenario.loader`), durations (:mod:`~sim.scenario.durations`) and ``module:Class``
plug-in targets (:mod:`~sim.scenario.plugins`). Imports nothing of serving, measuring or sweeps."""
