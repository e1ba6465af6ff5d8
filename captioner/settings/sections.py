"""A run's settings as typed values, one dataclass per section of the config.

`read_settings` (reading.py) builds them once from the composed Hydra config, checked and with
every path absolute; the stages below take these values (or plain values from them), never the
config itself. Field names are the config's keys, so an error can name `section.key`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CnnSettings:
    """The CNN that turns images into region features (`conf/cnn/*.yaml`)."""

    name: str
    input_size: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    weights: str | None = None  # a torchvision enum name, a timm tag, `package`; None: random init
    weights_path: Path | None = None  # a local state dict (wins over `weights`)
    seed: int = 0  # random init only, as is calibration
    calibration_images: int = 0
    batch_size: int = 32
    num_workers: int = 2
    # The CNN's last blocks trained with the decoder: the features file then holds the activations
    # that enter them, and the model runs them (model/cnn_top.py). 0: the file holds the final grid.
    trainable_blocks: int = 0
    decode: str = "auto"  # where extraction decodes JPEGs: features/image_batches.py

    @property
    def random_weights(self) -> bool:
        """No weights file and no pretrained weights: the network is randomly initialised."""
        return self.weights_path is None and self.weights is None


@dataclass(frozen=True)
class DatasetSettings:
    """Which dataset, where, and its format's own options (`conf/dataset/*.yaml`)."""

    name: str
    source: str  # the on-disk format (captioner/sources/)
    root: Path
    val_split: str = "val"
    test_split: str = "test"
    in_memory: bool = False
    strict: bool = False  # an unreadable image stops extraction (else it is skipped and listed)
    options: Mapping[str, Any] = field(default_factory=dict)  # the whole section, plain values


@dataclass(frozen=True)
class TextSettings:
    max_caption_length: int
    max_words: int | None
    min_word_count: int


@dataclass(frozen=True)
class DataSettings:
    batch_size: int
    eval_batch_size: int
    num_workers: int
    in_memory: bool
    resident: bool


@dataclass(frozen=True)
class ScheduledSampling:
    max_prob: float = 0.0
    start_epoch: float = 0
    ramp_epochs: float = 0


@dataclass(frozen=True)
class LrSchedule:
    name: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 1


@dataclass(frozen=True)
class ModelSettings:
    """The decoder's sizes and its cross-entropy recipe (`conf/model/default.yaml`); `rnn.cell` too."""

    cell: str
    embed_dim: int
    hidden_dim: int
    attention_dim: int
    dropout: float
    lr: float
    weight_decay: float
    attention_regularization: float
    compile: str  # auto | true | false: decided for the devices by trainer_setup/fast_path.py
    adam: str  # auto | fused | foreach | loop: decided by training/adam_implementation.py
    label_smoothing: float
    scheduled_sampling: ScheduledSampling
    lr_schedule: LrSchedule
    top_lr_multiplier: float = 0.1  # a trainable CNN top's lr, as a multiple of `lr`
    top_dropout: float = 0.0  # dropout on the grid the trainable top writes

    def hyperparameters(self) -> dict[str, Any]:
        """The recipe as CaptionModule takes it (and its checkpoints keep it): plain data."""
        values = asdict(self)
        del values["cell"], values["compile"]  # the module takes the run's decision on compile
        return values


@dataclass(frozen=True)
class DecodeSettings:
    """How test captions are written (model/decoding.py's DecodeOptions takes these fields)."""

    strategy: str = "greedy"
    beam_size: int = 3
    length_penalty: float = 0.0
    block_trigram_repeats: bool = False
    allow_unk: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScstSettings:
    """Self-critical training after cross-entropy (training/self_critical_stage.py)."""

    enabled: bool = False
    epochs: int = 5
    lr: float = 5e-5
    samples: int = 5
    baseline: str = "mean"
    batch_size: int = 32
    temperature: float = 1.0
    from_checkpoint: Path | None = None
    patience: int | None = None  # validations without a better dev CIDEr-D before the stage stops


@dataclass(frozen=True)
class TrainerSettings:
    """Lightning Trainer options; `options` holds them all, as `pl.Trainer(**options)` takes them."""

    max_epochs: int
    accelerator: str
    devices: Any  # an int, a list of device indices, or "auto"
    precision: str
    enable_progress_bar: bool
    options: Mapping[str, Any]


@dataclass(frozen=True)
class LoggerSettings:
    """One experiment logger: `kind` (csv | tensorboard | wandb | other, decided from its
    `_target_` here, once) and its options as `hydra.utils.instantiate` takes them."""

    name: str
    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class RunSettings:
    """Everything a training run needs, checked, paths absolute."""

    seed: int
    data_root: Path
    features_path: Path | None  # None: <data_root>/features/<dataset>-<cnn>-<key>.h5 (features/cache.py)
    ckpt_path: str | None  # an absolute .ckpt path, `last`, or None (a fresh run)
    cnn: CnnSettings
    dataset: DatasetSettings
    text: TextSettings
    data: DataSettings
    model: ModelSettings
    decode: DecodeSettings
    scst: ScstSettings
    trainer: TrainerSettings
    loggers: tuple[LoggerSettings, ...]
    checkpoint_every_minutes: float | None
    progress_every_s: float | None
    early_stopping_patience: int | None
    examples: int
    meteor: bool
    spice: bool
    sweep_name: str
    # The whole composed config as plain data, paths absolute: W&B's run config, metrics.json's summary.
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> list[str]:
        return [f"dataset={self.dataset.name}", f"cnn={self.cnn.name}", f"rnn={self.model.cell}"]
