"""Tokenizer and `Vocabulary`: words <-> ids, built on the train split only."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from captioner.model.tokens import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, UNK_ID

SPECIALS = SPECIAL_TOKENS

# The seed tutorial's Keras filter and the apostrophe: lower case, punctuation becomes a word break.
# coco-caption's PTB words keep "t-shirt" and "'s": the gap costs a human's caption 0.001
# CIDEr-D on Flickr8k (benchmarks/tokenizer_ceiling.py), kept so earlier checkpoints resume.
_PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']")


def tokenize(caption: str) -> list[str]:
    """Lower-cased words of a caption, punctuation dropped."""
    return _PUNCTUATION.sub(" ", caption.lower()).split()


class Vocabulary:
    """Word ids with `<pad>`=0, `<start>`=1, `<end>`=2, `<unk>`=3, then words by frequency."""

    def __init__(self, words: Sequence[str]):
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {list(words[:4])}")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("vocabulary words must be unique")

    pad_id, start_id, end_id, unk_id = PAD_ID, START_ID, END_ID, UNK_ID

    @classmethod
    def build(cls, captions: Iterable[str], max_words: int | None = 5000,
              min_count: int = 1) -> Vocabulary:
        """The `max_words` most frequent words seen at least `min_count` times (ties by spelling)."""
        counts = Counter(word for caption in captions for word in tokenize(caption))
        ranked = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                        key=lambda w: (-counts[w], w))
        if max_words is not None:
            ranked = ranked[:max_words]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def difference(self, saved: Sequence[str]) -> str | None:
        """How `saved` (a checkpoint's words) differs from this vocabulary; None: it does not. A
        model's output ids mean its own words: the same count of other words would load silently."""
        saved = list(saved)
        if saved == self.words:
            return None
        first = next((i for i, (a, b) in enumerate(zip(saved, self.words, strict=False)) if a != b),
                     min(len(saved), len(self.words)))
        theirs, ours = (repr(w[first]) if first < len(w) else "nothing" for w in (saved, self.words))
        return (f"{len(saved)} words against this run's {len(self.words)}, the first difference at id "
                f"{first}: {theirs} against {ours}")

    def encode(self, caption: str, max_length: int) -> list[int]:
        """`<start>` w1 .. wk `<end>` with k <= max_length words; unknown words -> `<unk>`."""
        ids = [self.index.get(word, self.unk_id) for word in tokenize(caption)[:max_length]]
        return [self.start_id, *ids, self.end_id]

    def encode_batch(self, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded id matrix (N, longest) and the true lengths including `<start>`/`<end>`."""
        encoded = [self.encode(c, max_length) for c in captions]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        ids = torch.full((len(encoded), int(lengths.max()) if encoded else 0), self.pad_id, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
        return ids, lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first `<end>`; `<start>` and `<pad>` are skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.words[i])
        return " ".join(words)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"words": self.words}, indent=0))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            words = json.loads(Path(path).read_text())["words"]
            if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
                raise ValueError("its words are not a list of strings")
            return cls(words)
        except (OSError, ValueError, KeyError, TypeError) as error:  # TypeError: not a JSON object
            raise ValueError(f"{path}: not a vocabulary file ({error})") from error
