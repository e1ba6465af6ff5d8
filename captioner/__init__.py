"""captioner: CNN + attention-RNN image captioning experiments."""
