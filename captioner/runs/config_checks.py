"""Every option that can be checked cheaply, checked before any work starts.

A typo (`decode.strategy=bem`, `decode.beam_size=0`, `rnn.cell=lsmt`) must not cost a feature
extraction and a whole training before the test step trips over it.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from captioner.errors import ConfigError

DECODE_STRATEGIES = ("greedy", "beam")
RNN_CELLS = ("gru", "lstm")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def config_problems(cfg: DictConfig) -> list[str]:
    """What is wrong with `cfg` (its paths absolute), one `key=value: expected ...` per problem."""
    from captioner.features.backbones import ARCHITECTURES
    from captioner.sources import SOURCES

    problems = []

    def expect(key: str, ok: bool, wanted: str) -> None:
        if not ok:
            problems.append(f"{key}={_get(cfg, key)!r}: expected {wanted}")

    decode = cfg.decode
    expect("decode.strategy", decode.strategy in DECODE_STRATEGIES, " or ".join(DECODE_STRATEGIES))
    expect("decode.beam_size", _integer(decode.beam_size) and decode.beam_size >= 1, "an integer >= 1")
    expect("decode.length_penalty", _number(decode.length_penalty) and decode.length_penalty >= 0,
           "a number >= 0 (GNMT's alpha; 0 ranks by log-probability)")
    expect("decode.block_trigram_repeats", isinstance(decode.block_trigram_repeats, bool), "true or false")
    expect("decode.allow_unk", isinstance(decode.get("allow_unk", False), bool), "true or false")
    expect("rnn.cell", cfg.rnn.cell in RNN_CELLS, " or ".join(RNN_CELLS))
    expect("cnn.name", cfg.cnn.name in ARCHITECTURES, "one of " + ", ".join(sorted(ARCHITECTURES)))
    expect("cnn.input_size", _integer(cfg.cnn.input_size) and cfg.cnn.input_size >= 32, "an integer >= 32")
    expect("cnn.batch_size", _integer(cfg.cnn.batch_size) and cfg.cnn.batch_size >= 1, "an integer >= 1")
    expect("dataset.source", cfg.dataset.source in SOURCES, "one of " + ", ".join(sorted(SOURCES)))
    for key in ("data.batch_size", "data.eval_batch_size", "text.max_caption_length",
                "model.embed_dim", "model.hidden_dim", "model.attention_dim"):
        value = _get(cfg, key)
        expect(key, _integer(value) and value >= 1, "an integer >= 1")
    expect("trainer.max_epochs", _integer(cfg.trainer.max_epochs) and cfg.trainer.max_epochs >= -1,
           "an integer >= 0 (or -1: no limit)")
    expect("model.dropout", _number(cfg.model.dropout) and 0 <= cfg.model.dropout < 1, "a number in [0, 1)")
    expect("model.lr", _number(cfg.model.lr) and cfg.model.lr > 0, "a number > 0")
    expect("examples", _integer(cfg.examples) and cfg.examples >= 0, "an integer >= 0")
    expect("meteor", isinstance(cfg.get("meteor", True), bool), "true or false")
    every = _get(cfg, "checkpoint.every_minutes")
    expect("checkpoint.every_minutes", every is None or (_number(every) and every > 0),
           "a number of minutes > 0, or null for epoch-end checkpoints only")
    weights_path = cfg.cnn.get("weights_path")
    if weights_path and not Path(weights_path).is_file():
        problems.append(f"cnn.weights_path={weights_path!r}: no such file; give the path of a .pth "
                        "state dict")
    return problems


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def check_config(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem found (each with the value and what would work)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
