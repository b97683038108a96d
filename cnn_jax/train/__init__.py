"""Training: state, steps, losses, metrics, optimisers, parallelism, checkpoints, logs, the loop."""
