"""Stage 6, training: the LightningModule (cross-entropy, then self-critical), schedules, checkpoints
written and read back, preemption, progress.
"""
