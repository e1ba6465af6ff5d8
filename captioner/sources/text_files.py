"""Reading a dataset's text files in whichever encoding the copy at hand was saved in.

The official files are UTF-8 (or ASCII), but copies re-saved on Windows circulate as cp1252 or
Latin-1, some with a UTF-8 byte-order mark and CRLF line ends; all of them read the same here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from captioner.sources.checks import DatasetFormatError

log = logging.getLogger(__name__)

# utf-8-sig drops a leading byte-order mark; latin-1 decodes any byte, so the list always ends.
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")


def read_text(path: Path, dataset: str, encodings: Sequence[str] = ENCODINGS) -> str:
    """The text of `path` in the first of `encodings` that decodes it.

    Falling back past the first encoding is one warning naming the file and the encoding used.
    """
    data = Path(path).read_bytes()
    failure: UnicodeDecodeError | None = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as error:
            failure = failure or error
            continue
        if failure is not None:
            log.warning("%s: %s is not %s (byte 0x%02x at offset %d); read it as %s", dataset, path,
                        encodings[0].removesuffix("-sig").upper(), data[failure.start], failure.start,
                        encoding)
        return text
    raise DatasetFormatError(f"{dataset}: {path} is in none of the encodings {', '.join(encodings)} "
                             f"({failure}); save it as UTF-8")
