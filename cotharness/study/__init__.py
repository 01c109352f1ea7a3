"""``cotharness study``: one YAML describes a whole study (teacher data -> ablations -> trainings ->
evaluations -> comparison); ``plan`` and ``status`` say which stages are current, new, changed or stale,
``run`` runs those that are not current.

``config`` reads and checks the YAML, ``sweep`` expands the training runs, ``graph`` turns a config into
stages in dependency order, ``identity`` hashes each stage and keeps ``studies/<name>/state.json``,
``estimates`` prices the API stages and times the GPU ones from the committed benchmarks, ``run`` calls
the step functions, ``cli`` prints.
"""
