"""A training run as the pipeline's steps (run.py): settings, resume, features, fit, test, and what
the run writes (its summary, captions, examples, provenance).
"""
