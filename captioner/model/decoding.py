"""How captions are written at test time, as one typed value: greedy or beam search and its knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from captioner.errors import ConfigError
from captioner.model.decoder import CaptionDecoder
from captioner.model.search import beam_search, greedy_decode
from captioner.model.tokens import UNK_ID, CaptionLength
from captioner.settings.choices import DECODE_STRATEGIES, MIN_BEAM_SIZE, MIN_LENGTH_PENALTY
from captioner.settings.value_kinds import finite_number, python_value, whole_number

# The settings checked the config against these; DecodeOptions checks them again for API users.
STRATEGIES = DECODE_STRATEGIES


@dataclass(frozen=True)
class DecodeOptions:
    """The `decode` config: `strategy` greedy or beam; the rest only matter for beam search."""

    strategy: str = "greedy"
    beam_size: int = 3
    length_penalty: float = 0.0  # GNMT's alpha: 0 ranks finished beams by log-probability alone
    block_trigram_repeats: bool = False
    allow_unk: bool = False  # research use: let captions contain <unk> (a person never sees it)

    def __post_init__(self) -> None:
        for field in fields(self):  # numpy's scalars (from array code) held as Python's: they go to json
            object.__setattr__(self, field.name, python_value(getattr(self, field.name)))
        if problems := self._problems():
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        """Each field outside what the settings allow, worded as the settings' checks word it."""
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"decode.strategy={self.strategy!r}: expected {' or '.join(STRATEGIES)}")
        if not whole_number(self.beam_size) or self.beam_size < MIN_BEAM_SIZE:
            problems.append(f"decode.beam_size={self.beam_size!r}: expected an integer >= {MIN_BEAM_SIZE}")
        if not finite_number(self.length_penalty) or self.length_penalty < MIN_LENGTH_PENALTY:
            problems.append(f"decode.length_penalty={self.length_penalty!r}: expected a number >= "
                            f"{MIN_LENGTH_PENALTY:g}")
        for name in ("block_trigram_repeats", "allow_unk"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"decode.{name}={getattr(self, name)!r}: expected true or false")
        return problems

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> DecodeOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in known})

    def with_changes(self, **changes: Any) -> DecodeOptions:
        """A copy with the given settings; None means "keep this one"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """The settings in a few characters, for a folder name: greedy, beam3-lp1-trigram, ..."""
        parts = [self.strategy]
        if self.strategy == "beam":
            parts = [f"beam{self.beam_size}", f"lp{self.length_penalty:g}"]
            parts += ["trigram"] if self.block_trigram_repeats else []
        return "-".join(parts + (["unk"] if self.allow_unk else []))

    def banned_ids(self) -> tuple[int, ...]:
        """Token ids decoding never writes besides <pad> and <start>: <unk> unless allowed."""
        return () if self.allow_unk else (UNK_ID,)


GREEDY = DecodeOptions()


def decode(decoder: CaptionDecoder, features: torch.Tensor, options: DecodeOptions,
           length: CaptionLength) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) and attention (B, L, R) of each image's caption, as `options` say."""
    if options.strategy == "greedy":
        return greedy_decode(decoder, features, *length.search_arguments(), banned=options.banned_ids())
    return beam_search(decoder, features, *length.search_arguments(), beam_size=options.beam_size,
                       length_penalty=options.length_penalty,
                       block_trigram_repeats=options.block_trigram_repeats, banned=options.banned_ids())
