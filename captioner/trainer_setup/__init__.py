"""The Lightning Trainer's parts for a run, chosen from its settings: callbacks, loggers, and the fast
path (compiled step, resident features)."""
