"""Pure-PyTorch layer of lth-sweep: datasets, models, masks and pruning, training loops,
measurements. Nothing here imports Ray, pyarrow or the orchestrator."""
