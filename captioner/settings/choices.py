"""The allowed values of every option that picks one of several alternatives.

One table, read by the settings checks (so a typo is refused before any work) and by the code that
implements each choice; tests/test_settings.py keeps it in step with that code (ARCHITECTURES,
SOURCES, ...), since this module may import nothing of the project but errors.py.
"""

from __future__ import annotations

CNN_NAMES = ("efficientnet_lite2", "inception_resnet_v2", "inception_v3", "mobilenet_v2", "resnet101",
             "vgg16")
# The smallest cnn.input_size each CNN runs at (Inception's stem and reductions: 75 px); others 32.
MIN_INPUT_SIZE = {"inception_v3": 75, "inception_resnet_v2": 75}
DEFAULT_MIN_INPUT_SIZE = 32
# How many of its last blocks each CNN can hand to training (`cnn.trainable_blocks`); the blocks
# themselves are listed in features/backbones.py (`grid_units`), which a test keeps in step.
TRAINABLE_BLOCKS = {"efficientnet_lite2": 3, "inception_resnet_v2": 0, "inception_v3": 3, "mobilenet_v2": 3,
                    "resnet101": 3, "vgg16": 3}
DATASET_SOURCES = ("coco", "flickr30k", "flickr8k", "iapr", "shapes")
RNN_CELLS = ("gru", "lstm")
IMAGE_DECODING = ("auto", "workers", "device")  # features/image_batches.py
DECODE_STRATEGIES = ("greedy", "beam")
# The lowest decode.beam_size and decode.length_penalty (GNMT's alpha) that work: settings/reading.py
# checks the config against them, model/decoding.py's DecodeOptions the values Python code gives.
MIN_BEAM_SIZE = 1
MIN_LENGTH_PENALTY = 0.0
LR_SCHEDULES = ("constant", "cosine", "plateau")
SCST_BASELINES = ("mean", "greedy")  # of the image's other samples | its greedy caption's reward
COMPILE_CHOICES = ("auto", "true", "false")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Lightning's precision names (pytorch_lightning.trainer.connectors.accelerator_connector).
PRECISIONS = ("64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "64", "32", "16",
              "bf16", "transformer-engine", "transformer-engine-float16")
ADAM_IMPLEMENTATIONS = ("auto", "fused", "foreach", "loop")  # training/adam_implementation.py
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16")
# Fused Adam unscales gradients inside its own step, so Lightning cannot clip them under mixed precision.
FUSED_ADAM_CLIPPED = ("model.adam=fused cannot be clipped under trainer.precision={precision} (fused Adam "
                      "unscales inside its step), use model.adam=auto or foreach, or "
                      "trainer.gradient_clip_val=0")
