"""The composed Hydra config -> checked, typed settings, once, before anything is written.

Every value a user can get wrong is checked here, so a typo (`decode.strategy=bem`,
`scst.baseline=gredy`, `model.lr_schedule.name=cosin`) costs one line and exit 2, not a feature
extraction and a whole fit before the stage that reads it trips over it. Relative paths start at
`base_dir` (where the user launched; Hydra does not change directory) and are made absolute here,
before anything hashes or opens them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from captioner.errors import ConfigError
from captioner.paths import absolute
from captioner.settings import choices
from captioner.settings.sections import (
    CnnSettings,
    DatasetSettings,
    DataSettings,
    DecodeSettings,
    LoggerSettings,
    LrSchedule,
    ModelSettings,
    RunSettings,
    ScheduledSampling,
    ScstSettings,
    TextSettings,
    TrainerSettings,
)
from captioner.settings.value_kinds import finite_number, python_value, whole_number

PATH_OPTIONS = ("data_root", "dataset.root", "features_path", "cnn.weights_path", "scst.from_checkpoint")
_MISSING = object()
MAX_SEED = 2**32 - 1  # what Lightning's seed_everything takes


def with_absolute_paths(cfg: DictConfig, base_dir: Path) -> DictConfig:
    """A copy of `cfg` whose path options are absolute (`ckpt_path` too, unless it is `last`)."""
    resolved = cfg.copy()
    OmegaConf.set_struct(resolved, False)
    not_paths = []
    for key in (*PATH_OPTIONS, "ckpt_path"):
        value = OmegaConf.select(cfg, key, default=None)
        if value in (None, "") or (key == "ckpt_path" and value == "last"):
            continue
        if not isinstance(value, str):  # `features_path=5`, `ckpt_path=true`: Path() would raise
            not_paths.append(f"{key}={value!r}: expected a path" + (" or last" if key == "ckpt_path" else ""))
            continue
        OmegaConf.update(resolved, key, str(absolute(value, base_dir)), merge=False)
    if not_paths:
        raise ConfigError("; ".join(not_paths))
    return resolved


class _Reader:
    """Reads keys of one config, collecting every problem instead of stopping at the first."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.problems: list[str] = []

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value of `key` as plain data (None, with a problem, when it cannot be read)."""
        found, value = self._select(key, default)
        return value if found else None

    def _select(self, key: str, default: Any) -> tuple[bool, Any]:
        try:
            value = OmegaConf.select(self.cfg, key, default=default, throw_on_missing=True)
        except OmegaConfBaseException as error:  # an interpolation that cannot be resolved, a ???
            self.problems.append(f"{key}: {str(error).splitlines()[0]}")
            return False, None
        if value is _MISSING:
            self.problems.append(f"{key}: missing; the config must set it")
            return False, None
        return True, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    def get(self, key: str, ok: Callable[[Any], bool], wanted: str, default: Any = _MISSING) -> Any:
        """The value of `key` if `ok(value)`; else a problem `key=value: expected <wanted>`."""
        found, value = self._select(key, default)
        if not found:
            return None
        try:
            good = ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.problems.append(f"{key}={value!r}: expected {wanted}")
        return value

    def integer(self, key: str, minimum: int, default: Any = _MISSING, *, nullable: bool = False,
                wanted: str | None = None) -> int | None:
        return self.get(key, lambda v: (nullable and v is None) or (whole_number(v) and v >= minimum),
                        wanted or f"an integer >= {minimum}" + (" or null" if nullable else ""), default)

    def number(self, key: str, ok: Callable[[float], bool], wanted: str, default: Any = _MISSING, *,
               nullable: bool = False) -> float | None:
        value = self.get(key, lambda v: (nullable and v is None) or (finite_number(v) and ok(v)),
                         wanted + (", or null" if nullable else ""), default)
        return None if value is None else float(value) if finite_number(value) else value

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        return self.get(key, lambda v: isinstance(v, bool), "true or false", default)

    def choice(self, key: str, allowed: Sequence[str], default: Any = _MISSING) -> str:
        listed = f"{', '.join(allowed[:-1])} or {allowed[-1]}"  # greedy or beam; constant, cosine or plateau
        wanted = listed if len(allowed) <= 3 else "one of " + ", ".join(allowed)
        return self.get(key, lambda v: v in allowed, wanted, default)

    def text(self, key: str, default: Any = _MISSING) -> str:
        return self.get(key, lambda v: isinstance(v, str) and v != "", "a non-empty string", default)


def read_settings(cfg: DictConfig, base_dir: Path) -> RunSettings:
    """The run's settings from the composed config; one ConfigError listing every problem."""
    try:
        cfg = with_absolute_paths(cfg, Path(base_dir))
    except OmegaConfBaseException as error:  # e.g. data_root: ${oc.env:X} with X unset
        raise ConfigError(" ".join(str(error).split())) from None
    read = _Reader(cfg)
    settings = RunSettings(
        seed=read.get("seed", lambda v: whole_number(v) and 0 <= v <= MAX_SEED,
                      f"an integer from 0 to {MAX_SEED}"),
        data_root=Path(read.text("data_root") or "."),  # "." only ever in settings refused below
        features_path=_path(read.raw("features_path", None)),
        ckpt_path=read.raw("ckpt_path", None) or None,
        cnn=read_cnn(read),
        dataset=_dataset(read),
        text=TextSettings(
            max_caption_length=read.integer("text.max_caption_length", 1),
            max_words=read.integer("text.max_words", 1, None, nullable=True),
            min_word_count=read.integer("text.min_word_count", 0, 1)),
        data=DataSettings(
            batch_size=read.integer("data.batch_size", 1),
            eval_batch_size=read.integer("data.eval_batch_size", 1),
            num_workers=read.integer("data.num_workers", 0, 0),
            in_memory=read.flag("data.in_memory", False),
            resident=read.flag("data.resident", True)),
        model=_model(read),
        decode=_decode(read),
        scst=_scst(read),
        trainer=_trainer(read),
        loggers=read_loggers(read),
        checkpoint_every_minutes=read.number(
            "checkpoint.every_minutes", lambda v: v > 0,
            "a number of minutes > 0, or null for epoch-end checkpoints only", None, nullable=True),
        progress_every_s=read.number("progress_every_s", lambda v: v >= 0, "a number of seconds >= 0", 60,
                                     nullable=True),
        # 0 or null: no early stopping
        early_stopping_patience=read.integer("early_stopping.patience", 0, None, nullable=True) or None,
        examples=read.integer("examples", 0, 3),
        meteor=read.flag("meteor", True),
        spice=read.flag("spice", False),
        sweep_name=read.text("sweep_name", "multirun"),
        config=_plain(cfg, read),
    )
    _across_sections(settings, read)
    if read.problems:
        raise ConfigError("; ".join(read.problems))
    return settings


def _min_input_size(cnn_name: Any) -> int:
    known = isinstance(cnn_name, str) and cnn_name in choices.MIN_INPUT_SIZE  # a bad name is its own problem
    return choices.MIN_INPUT_SIZE[cnn_name] if known else choices.DEFAULT_MIN_INPUT_SIZE


def read_cnn(read: _Reader, prefix: str = "cnn") -> CnnSettings:
    def three(values: Any, ok: Callable[[float], bool]) -> bool:
        return isinstance(values, list) and len(values) == 3 and all(
            finite_number(v) and ok(v) for v in values)

    weights_path = read.raw(f"{prefix}.weights_path", None) or None
    if weights_path and not Path(weights_path).is_file():
        read.problems.append(f"{prefix}.weights_path={weights_path!r}: no such file, give the path of a "
                             ".pth state dict")
    return CnnSettings(
        name=read.choice(f"{prefix}.name", choices.CNN_NAMES),
        input_size=read.integer(f"{prefix}.input_size", _min_input_size(read.raw(f"{prefix}.name", None))),
        mean=tuple(read.get(f"{prefix}.mean", lambda v: three(v, lambda x: True), "three numbers") or ()),
        std=tuple(read.get(f"{prefix}.std", lambda v: three(v, lambda x: x > 0), "three numbers > 0") or ()),
        weights=read.get(f"{prefix}.weights", lambda v: v is None or (isinstance(v, str) and v != ""),
                         "a weights name (e.g. IMAGENET1K_V1, package) or null for random weights", None),
        weights_path=Path(weights_path) if weights_path else None,
        seed=read.integer(f"{prefix}.seed", 0, 0),
        calibration_images=read.integer(f"{prefix}.calibration_images", 0, 0),
        batch_size=read.integer(f"{prefix}.batch_size", 1, 32),
        num_workers=read.integer(f"{prefix}.num_workers", 0, 2),
        trainable_blocks=_trainable_blocks(read, prefix, weights_path),
        decode=read.choice(f"{prefix}.decode", choices.IMAGE_DECODING, "auto"))


def _trainable_blocks(read: _Reader, prefix: str, weights_path: Any) -> int:
    blocks = read.integer(f"{prefix}.trainable_blocks", 0, 0)
    name = read.raw(f"{prefix}.name", None)
    most = choices.TRAINABLE_BLOCKS.get(name) if isinstance(name, str) else None  # a bad name: its own error
    if most is not None and isinstance(blocks, int) and blocks > most:
        read.problems.append(f"{prefix}.trainable_blocks={blocks}: {name} lists {most} top blocks to train; "
                             f"choose 0-{most}")
    if blocks and not weights_path and read.raw(f"{prefix}.weights", None) is None:
        read.problems.append(f"{prefix}.trainable_blocks={blocks} fine-tunes pretrained blocks, but "
                             f"{prefix}.weights=null is a random network; set {prefix}.weights or "
                             f"{prefix}.weights_path, or {prefix}.trainable_blocks=0")
    return blocks


def _dataset(read: _Reader) -> DatasetSettings:
    options = read.get("dataset", lambda v: isinstance(v, dict), "a dataset section (dataset=<name>)", {})
    return DatasetSettings(
        name=read.text("dataset.name"),
        source=read.choice("dataset.source", choices.DATASET_SOURCES),
        root=Path(read.text("dataset.root") or "."),
        val_split=read.text("dataset.val_split", "val"),
        test_split=read.text("dataset.test_split", "test"),
        in_memory=read.flag("dataset.in_memory", False),
        strict=read.flag("dataset.strict", False),
        options=options if isinstance(options, dict) else {})


def _model(read: _Reader) -> ModelSettings:
    fraction = "a number in [0, 1)"
    compile_setting = read.raw("model.compile", "auto")
    compile_name = str(compile_setting).lower() if compile_setting is not None else "auto"
    if compile_name not in choices.COMPILE_CHOICES:
        read.problems.append(f"model.compile={compile_setting!r}: expected auto, true or false")
    return ModelSettings(
        cell=read.choice("rnn.cell", choices.RNN_CELLS),
        embed_dim=read.integer("model.embed_dim", 1),
        hidden_dim=read.integer("model.hidden_dim", 1),
        attention_dim=read.integer("model.attention_dim", 1),
        dropout=read.number("model.dropout", lambda v: 0 <= v < 1, fraction),
        lr=read.number("model.lr", lambda v: v > 0, "a number > 0"),
        weight_decay=read.number("model.weight_decay", lambda v: v >= 0, "a number >= 0", 0.0),
        attention_regularization=read.number("model.attention_regularization", lambda v: v >= 0,
                                             "a number >= 0 (0: off)", 1.0),
        compile=compile_name,
        adam=read.choice("model.adam", choices.ADAM_IMPLEMENTATIONS, "auto"),
        label_smoothing=read.number("model.label_smoothing", lambda v: 0 <= v < 1, fraction, 0.0),
        scheduled_sampling=ScheduledSampling(
            max_prob=read.number("model.scheduled_sampling.max_prob", lambda v: 0 <= v <= 1,
                                 "a probability in [0, 1]", 0.0),
            start_epoch=read.number("model.scheduled_sampling.start_epoch", lambda v: v >= 0,
                                    "a number of epochs >= 0", 0),
            ramp_epochs=read.number("model.scheduled_sampling.ramp_epochs", lambda v: v >= 0,
                                    "a number of epochs >= 0", 0)),
        lr_schedule=LrSchedule(
            name=read.choice("model.lr_schedule.name", choices.LR_SCHEDULES, "constant"),
            warmup_steps=read.integer("model.lr_schedule.warmup_steps", 0, 0),
            min_lr_ratio=read.number("model.lr_schedule.min_lr_ratio", lambda v: 0 <= v <= 1,
                                     "a number in [0, 1]", 0.0),
            plateau_factor=read.number("model.lr_schedule.plateau_factor", lambda v: 0 < v < 1,
                                       "a number in (0, 1)", 0.5),
            plateau_patience=read.integer("model.lr_schedule.plateau_patience", 0, 1)),
        top_lr_multiplier=read.number("model.top_lr_multiplier", lambda v: v >= 0,
                                      "a number >= 0 (0: the top stays as it is)", 0.1),
        top_dropout=read.number("model.top_dropout", lambda v: 0 <= v < 1, fraction, 0.0))


def _decode(read: _Reader) -> DecodeSettings:
    return DecodeSettings(
        strategy=read.choice("decode.strategy", choices.DECODE_STRATEGIES),
        beam_size=read.integer("decode.beam_size", choices.MIN_BEAM_SIZE, 3),
        length_penalty=read.number("decode.length_penalty", lambda v: v >= choices.MIN_LENGTH_PENALTY,
                                   f"a number >= {choices.MIN_LENGTH_PENALTY:g} (GNMT's alpha; 0 ranks by "
                                   "log-probability)", 0.0),
        block_trigram_repeats=read.flag("decode.block_trigram_repeats", False),
        allow_unk=read.flag("decode.allow_unk", False))


def decode_settings(values: Mapping[str, Any]) -> DecodeSettings:
    """Decoding options from plain values (e.g. the CLIs' flags), checked as the config's are."""
    plain = {key: python_value(value) for key, value in values.items()}  # OmegaConf refuses numpy's
    read = _Reader(OmegaConf.create({"decode": {**DecodeSettings().as_dict(), **plain}}))
    settings = _decode(read)
    if read.problems:
        raise ConfigError("; ".join(read.problems))
    return settings


def _scst(read: _Reader) -> ScstSettings:
    enabled = read.flag("scst.enabled", False)
    from_checkpoint = read.raw("scst.from_checkpoint", None) or None
    if from_checkpoint and not enabled:  # it would be ignored: a whole cross-entropy run instead
        read.problems.append(f"scst.from_checkpoint={from_checkpoint!r}: only with scst.enabled=true (it "
                             "starts the self-critical stage from that checkpoint)")
    if enabled and from_checkpoint and not Path(from_checkpoint).is_file():
        read.problems.append(f"scst.from_checkpoint={from_checkpoint!r}: no such checkpoint file, give a "
                             "cross-entropy .ckpt of this model, or null to train cross-entropy first")
    return ScstSettings(
        enabled=enabled,
        epochs=read.integer("scst.epochs", 1, 5),
        lr=read.number("scst.lr", lambda v: v >= 0, "a number >= 0 (0: the stage changes nothing)", 5e-5),
        samples=read.integer("scst.samples", 1, 5),
        baseline=read.choice("scst.baseline", choices.SCST_BASELINES, "mean"),
        batch_size=read.integer("scst.batch_size", 1, 32),
        temperature=read.number("scst.temperature", lambda v: v > 0, "a number > 0", 1.0),
        from_checkpoint=Path(from_checkpoint) if from_checkpoint else None,
        patience=read.integer("scst.patience", 0, None, nullable=True) or None)


def _devices(value: Any) -> bool:
    """Whether Lightning's Trainer takes `value` as `devices` (0 and [] it refuses)."""
    if isinstance(value, str):
        return re.fullmatch(r"\s*(auto|-1|\d+|\d+(\s*,\s*\d+)*\s*,?)\s*", value) is not None and \
            value.strip() not in ("0", "")
    if isinstance(value, list):
        return bool(value) and all(whole_number(i) and i >= 0 for i in value)
    return whole_number(value) and (value >= 1 or value == -1)


# Trainer options the run sets itself (runs/run.py), and where a user chooses instead.
RUN_SETS = {"logger": "choose with the logger= group", "callbacks": "checkpoints, early stopping and "
            "progress come from their own keys", "plugins": "checkpoints are written whole by the run",
            "default_root_dir": "the run folder is hydra.run.dir"}


def _trainer_option_problems(options: dict[str, Any]) -> list[str]:
    """Keys of the trainer section that Lightning's Trainer does not take: a typo there
    (`+trainer.max_epoch=5`) failed only after the features were extracted."""
    import inspect

    import pytorch_lightning as pl

    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    problems = [f"trainer.{key}: set by the run itself ({RUN_SETS[key]})"
                for key in sorted(set(options) & set(RUN_SETS))]
    for key in sorted(set(options) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        problems.append(f"trainer.{key}: not an option of Lightning's Trainer"
                        + (f" (did you mean trainer.{close[0]}?)" if close else ""))
    return problems


def _trainer(read: _Reader) -> TrainerSettings:
    options = read.get("trainer", lambda v: isinstance(v, dict), "a trainer section", {})
    if isinstance(options, dict):
        read.problems += _trainer_option_problems(options)
    read.get("trainer.check_val_every_n_epoch", lambda v: v is None or (whole_number(v) and v >= 1),
             "an integer >= 1 or null", None)
    read.number("trainer.gradient_clip_val", lambda v: v >= 0, "a number >= 0", None, nullable=True)
    precision = read.get("trainer.precision", lambda v: v is None or str(v) in choices.PRECISIONS,
                         "one of " + ", ".join(choices.PRECISIONS[:6]) + " (or null: 32-true)", "32-true")
    accelerator = read.choice("trainer.accelerator", choices.ACCELERATORS, "auto")
    if accelerator == "cpu" and str(read.raw("trainer.devices", 1)).strip() == "-1":
        read.problems.append("trainer.devices=-1 means every GPU, but trainer.accelerator=cpu: give a "
                             "number of processes")
    return TrainerSettings(
        max_epochs=read.integer("trainer.max_epochs", -1, wanted="an integer >= 0 (or -1: no limit)"),
        accelerator=accelerator,
        devices=read.get("trainer.devices", _devices, "a number of devices (>= 1, or -1: all), a list of "
                         "device indices, or a string Lightning reads (auto, \"2\", \"0,1\")", 1),
        precision="32-true" if precision is None else str(precision),
        enable_progress_bar=read.flag("trainer.enable_progress_bar", True),
        options=options if isinstance(options, dict) else {})


def logger_settings(cfg: DictConfig) -> tuple[LoggerSettings, ...]:
    """The `logger` group's entries of `cfg` alone (a sweep's end reads them from Hydra's config)."""
    read = _Reader(cfg)
    loggers = read_loggers(read)
    if read.problems:
        raise ConfigError("; ".join(read.problems))
    return loggers


def read_loggers(read: _Reader) -> tuple[LoggerSettings, ...]:
    """The `logger` group's entries, each with its kind decided from its `_target_`."""
    entries = read.get("logger", lambda v: v is None or isinstance(v, dict), "a logger section or null", None)
    loggers = []
    for name, options in (entries or {}).items():
        target = options.get("_target_") if isinstance(options, Mapping) else None
        if not isinstance(target, str) or not target:
            read.problems.append(f"logger.{name}: expected a logger with a _target_ class")
            continue
        loggers.append(LoggerSettings(name, logger_kind(target), dict(options)))
    return tuple(loggers)


def logger_kind(target: str) -> str:
    """From a logger's `_target_` class path: wandb, tensorboard, csv (the project's
    ResumingCSVLogger, which goes on from a resumed step) or other."""
    cls = target.rsplit(".", 1)[-1]
    kinds = {"WandbLogger": "wandb", "TensorBoardLogger": "tensorboard", "ResumingCSVLogger": "csv"}
    return kinds.get(cls, "other")


def _across_sections(settings: RunSettings, read: _Reader) -> None:
    """Checks that need two sections at once."""
    scst = settings.scst
    if scst.enabled and scst.baseline == "mean" and scst.samples == 1:
        read.problems.append("scst.baseline=mean needs scst.samples >= 2 (got 1): the baseline is the mean "
                             "of the other samples, or use scst.baseline=greedy")
    trainer = settings.trainer
    clip = trainer.options.get("gradient_clip_val")
    if settings.model.adam == "fused" and trainer.precision in choices.MIXED_PRECISIONS and clip:
        read.problems.append(choices.FUSED_ADAM_CLIPPED.format(precision=trainer.precision))
    unbounded = trainer.max_epochs == -1 and trainer.options.get("max_steps", -1) in (-1, None)
    if settings.model.lr_schedule.name == "cosine" and unbounded:
        read.problems.append("model.lr_schedule.name=cosine needs a finite trainer.max_epochs (it decays "
                             "to the last step), use constant or plateau for open-ended runs")


def _path(value: Any) -> Path | None:
    return Path(value) if value not in (None, "") else None


def _plain(cfg: DictConfig, read: _Reader) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        read.problems.append(str(error).splitlines()[0])
        return {}
