"""What a run's numbers are: the metrics of one run (:mod:`~sim.measuring.metrics`: propagation,
exposure, suppression, repeat offences, harm, regret), the comparison of variants with intervals
(:mod:`~sim.measuring.compare`, :mod:`~sim.measuring.effects`), replications until precise
(:mod:`~sim.measuring.replications`) and what the probes prevented
(:mod:`~sim.measuring.responsiveness`). Reads what serving leaves behind, never its machinery."""
