"""Where jobs run, and the only code that talks to Ray: the runtime and its tasks (:mod:`.runtime`),
a job's output folder taken safely on any cluster (:mod:`.output`, with the ``OUT/.lock`` of
:mod:`.lock`), local multi-node clusters (:mod:`.local`) and Ray Jobs submission (:mod:`.jobs_api`)."""
