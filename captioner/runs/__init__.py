"""Stage 8, runs: one configuration's pipeline as steps, config checks, resume, loggers, what a run
writes, DDP and GPU leases.
"""
