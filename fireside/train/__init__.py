"""Training: pretraining, checkpoints that resume exactly, optimizers, torchrun DDP."""
