"""The decoding flags shared by `captioner.evaluate` and `captioner.caption`."""

from __future__ import annotations

import argparse
from typing import Any


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decode", choices=("greedy", "beam"), help="default: the checkpoint's setting")
    parser.add_argument("--beam-size", type=int)
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha; 0 ranks by log-probability")
    parser.add_argument("--block-trigram-repeats", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--allow-unk", action=argparse.BooleanOptionalAction, default=None,
                        help="let captions contain <unk> (research use; default: never)")


def decode_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as `DecodeOptions` fields (the rest stay the checkpoint's)."""
    given = {"strategy": args.decode, "beam_size": args.beam_size, "length_penalty": args.length_penalty,
             "block_trigram_repeats": args.block_trigram_repeats, "allow_unk": args.allow_unk}
    return {key: value for key, value in given.items() if value is not None}
