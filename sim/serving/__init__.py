"""One run of the loop: the event loop (:mod:`~sim.serving.engine`) serving micro-batches through
the stack (:mod:`~sim.serving.stack`), the update layers and their stores, the event log every
layer reads (:mod:`~sim.serving.eventlog`), label delays, probes, and the runner that wires the
world and the policy together (:mod:`~sim.serving.runner`, the composition root).

What measuring may read of a run is what a run leaves behind: the event log, the
:class:`~sim.serving.runner.RunResult`, the layers' versions and absorptions, the probe records
(``tests/test_import_graph.py`` keeps it so)."""
