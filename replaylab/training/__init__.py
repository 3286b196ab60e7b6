"""Training: the compiled learner, the one host loop, evaluation, checkpoints and logs."""
