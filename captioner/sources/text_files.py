"""Reading a dataset's text files in whichever encoding the copy at hand was saved in.

The official files are UTF-8 (or ASCII), but copies re-saved on Windows circulate as cp1252 or
Latin-1, some with a UTF-8 byte-order mark and CRLF line ends, some as Notepad's "Unicode"
(UTF-16 with a byte-order mark); all of them read the same here.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from pathlib import Path

from captioner.sources.checks import DatasetFormatError

log = logging.getLogger(__name__)

# Tried in order on a file without a UTF-16 or UTF-32 byte-order mark; latin-1 decodes any byte,
# so the list always ends.
ENCODINGS = ("utf-8", "cp1252", "latin-1")

# Byte-order marks that name their encoding outright: (mark, codec, name for messages). UTF-32's
# little-endian mark starts with UTF-16's, so it is looked for first. UTF-8's mark is not here: a
# UTF-8-marked copy with one stray Windows byte still falls back through `ENCODINGS`.
_WIDE_MARKS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
               (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))


def read_text(path: Path, dataset: str, encodings: Sequence[str] = ENCODINGS, *,
              warn_on_fallback: bool = True) -> str:
    """The text of `path`, without a byte-order mark: in the UTF-16 or UTF-32 its mark names, else
    in the first of `encodings` that decodes it.

    Falling back past the first encoding is one warning naming the file, the first byte the first
    encoding could not decode and the encoding used; `warn_on_fallback=False` when the fallback is
    the dataset's own encoding, so reading the official files says nothing.
    """
    data = Path(path).read_bytes()
    for mark, codec, name in _WIDE_MARKS:
        if data.startswith(mark):
            return _decode_after_mark(data, len(mark), codec, name, path, dataset)
    # The UTF-8 mark goes before decoding, or a fallback to cp1252 keeps it as 'ï»¿'.
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    failure: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            text = data[start:].decode(encoding)
        except UnicodeDecodeError as error:
            failure = failure or error
            continue
        if failure is not None and warn_on_fallback:
            offset = start + failure.start  # in the file's bytes, as a hex editor shows it
            log.warning("%s: %s is not %s (byte 0x%02x at offset %d); read it as %s", dataset, path,
                        encodings[0].upper(), data[offset], offset, encoding)
        return text
    raise DatasetFormatError(f"{dataset}: {path} is in none of the encodings {', '.join(encodings)} "
                             f"({failure}); save it as UTF-8")


def _decode_after_mark(data: bytes, start: int, codec: str, name: str, path: Path, dataset: str) -> str:
    """`data` from `start` (past its byte-order mark) in `codec`, or an error saying the file is
    marked as `name` but does not decode as it."""
    try:
        return data[start:].decode(codec)
    except UnicodeDecodeError as error:
        raise DatasetFormatError(
            f"{dataset}: {path} is {name} (its byte-order mark says so) but does not decode as {name} "
            f"at byte offset {start + error.start} ({error.reason}); save it again as UTF-8") from error


def text_lines(text: str) -> list[str]:
    """The lines of `text`, cut at '\\n', '\\r\\n' and '\\r' only.

    `str.splitlines` also cuts at U+2028, U+0085, form feeds and other separators a caption can
    hold: that cuts the caption in two and puts every later line number off by one.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines  # a final line end starts no line
