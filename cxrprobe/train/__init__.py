"""Domain adaptation: losses, the training loop, checkpoints."""
