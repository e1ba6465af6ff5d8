"""Stage 7, inference: scoring a checkpoint on any split, captioning new images, attention figures.
"""
