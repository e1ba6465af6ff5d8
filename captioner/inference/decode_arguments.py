"""The decoding flags shared by `captioner.evaluate` and `captioner.caption`."""

from __future__ import annotations

import argparse
from typing import Any

from captioner.errors import ConfigError
from captioner.settings.reading import decode_settings


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decode", choices=("greedy", "beam"), help="default: the checkpoint's setting")
    parser.add_argument("--beam-size", type=int)
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha; 0 ranks by log-probability")
    parser.add_argument("--block-trigram-repeats", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--allow-unk", action=argparse.BooleanOptionalAction, default=None,
                        help="let captions contain <unk> (research use; default: never)")


FLAGS = {"strategy": "--decode", "beam_size": "--beam-size", "length_penalty": "--length-penalty",
         "block_trigram_repeats": "--block-trigram-repeats", "allow_unk": "--allow-unk"}


def decode_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as `DecodeOptions` fields (the rest stay the checkpoint's); a bad
    value (e.g. `--beam-size 0`) is a ConfigError naming the flag, before any checkpoint is read."""
    given = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in FLAGS.items()}
    changes = {key: value for key, value in given.items() if value is not None}
    try:
        decode_settings(changes)
    except ConfigError as error:
        message = str(error)
        for field, flag in FLAGS.items():
            message = message.replace(f"decode.{field}=", f"{flag} ")
        raise ConfigError(message) from None
    return changes
