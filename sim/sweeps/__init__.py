"""Many runs: planning a scenario's variants × replications (:mod:`~sim.sweeps.plan`), running
them serially, on worker processes or on Ray (:mod:`~sim.sweeps.sweep`), and writing each run's
and the sweep's results atomically (:mod:`~sim.sweeps.results`)."""
