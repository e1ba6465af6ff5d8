"""Stage 3, batches: the vocabulary, the datamodule over a features file, the training order, features
resident on the GPU.
"""
