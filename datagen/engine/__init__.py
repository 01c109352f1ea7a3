"""The machinery every datagen workload shares: backends, the runner, the output store, prices, the command-line checks."""
