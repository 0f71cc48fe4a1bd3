"""Training: the loop (trainer.py) and its evaluation, optimizers (LARS, factory, schedules),
losses and metrics, the tf.distribute strategy, checkpoints and progress output."""
