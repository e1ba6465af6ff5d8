"""The special tokens and the caption-length arithmetic every stage agrees on.

A caption of up to `max_words` words is decoded as the words and `<end>` (`with_end` tokens; one
the model never ends is cut there, all words) and trained on as `<start>`, the words and `<end>`
(`with_start_and_end`); those sums live here only.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL_TOKENS = ("<pad>", "<start>", "<end>", "<unk>")
PAD_ID, START_ID, END_ID, UNK_ID = range(len(SPECIAL_TOKENS))


@dataclass(frozen=True)
class CaptionLength:
    """Captions of up to `max_words` words (`text.max_caption_length`)."""

    max_words: int

    @property
    def with_end(self) -> int:
        """Tokens a decoded caption can have: its words, then `<end>`."""
        return self.max_words + 1

    @property
    def with_start_and_end(self) -> int:
        """Tokens of a training row: `<start>`, the words, `<end>`."""
        return self.max_words + 2

    def search_arguments(self) -> tuple[int, int, int, int]:
        """(max_words, start, end, pad): what greedy, beam and sampled decoding take."""
        return self.max_words, START_ID, END_ID, PAD_ID
