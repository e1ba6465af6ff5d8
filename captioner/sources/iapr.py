"""IAPR TC-12: `images/NN/NNNN.jpg` and `annotations_complete_eng/NN/NNNN.eng`.

Each `.eng` file is one SGML-like record in ISO-8859-1 (the official release; UTF-8 copies read too):
`<DOC><DOCNO>..</DOCNO><TITLE>..</TITLE><DESCRIPTION>..</DESCRIPTION>..<IMAGE>images/NN/NNNN.jpg</IMAGE>..</DOC>`.
The caption is the description's first sentence (clauses end with ';' or '.', not the period of
an abbreviation such as "St." or "approx."), or the whole description with `caption: description`.
Splits are random with a seed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.sources.checks import DatasetLayoutError, require_images, require_root
from captioner.sources.record import ImageRecord, real_captions
from captioner.sources.splits import random_splits
from captioner.sources.text_files import read_text

log = logging.getLogger(__name__)

DOWNLOAD = "IAPR TC-12 is distributed by ImageCLEF (iaprtc12.tgz)."
_FIELD = re.compile(r"<(DESCRIPTION|IMAGE)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_SENTENCE_END = re.compile(r"[;.](?=\s|$)")
_LAST_WORD = re.compile(r"\w+$")
# Abbreviations IAPR's descriptions use mid-sentence ("St. Peter's church", "approx. 30 years old",
# "Mt. Cotopaxi", "Av. Amazonas"); "etc." is not one of them, as it mostly ends a clause.
_ABBREVIATIONS = frozenset({"approx", "ca", "st", "sta", "sto", "mt", "mts", "av", "ave", "dr", "mr", "mrs",
                            "jr", "sr", "no", "nr"})
# Strict UTF-8 first: ISO-8859-1 decodes any byte, so a UTF-8 copy read as it turns "é" into "Ã©";
# Latin-1 text is practically never valid UTF-8, so the official files still fall through to it.
_ENCODINGS = ("utf-8", "iso-8859-1")


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    root = require_root(root, "iapr", DOWNLOAD)
    annotations = root / options.get("annotations_dir", "annotations_complete_eng")
    files = sorted(annotations.glob("*/*.eng"))
    if not files:
        raise DatasetLayoutError(f"iapr: no annotation files {annotations}/NN/NNNN.eng. {DOWNLOAD}")
    whole = options.get("caption", "first_sentence") == "description"
    captions, images, missing = {}, {}, 0
    for file in files:
        fields = {name.upper(): value.strip() for name, value in _FIELD.findall(
            read_text(file, "iapr", encodings=_ENCODINGS, warn_on_fallback=False))}
        description = " ".join(fields.get("DESCRIPTION", "").split())
        image = root / fields.get("IMAGE", f"images/{file.parent.name}/{file.stem}.jpg")
        if not image.is_file():
            missing += 1
            continue
        captions[file.stem] = [description if whole else first_sentence(description)]
        images[file.stem] = image
    if missing:
        log.warning("iapr: skipped %d annotations whose image is missing", missing)
    captions = real_captions(captions, "iapr", annotations)
    found = list(captions)
    splits = random_splits(len(found), dict(options.get("split_fractions")), options.get("seed", 0))
    records = [ImageRecord(stem, images[stem], captions[stem], split)
               for stem, split in zip(found, splits, strict=True)]
    return require_images(records, "iapr", root / "images", annotations)


def first_sentence(description: str) -> str:
    """Up to the first ';' or '.' that ends a clause (IAPR's descriptions chain clauses with ';'),
    passing over the periods of abbreviations."""
    end = next((match.start() for match in _SENTENCE_END.finditer(description)
                if not _closes_abbreviation(description, match.start())), len(description))
    return description[:end].strip(" ;.,")


def _closes_abbreviation(description: str, mark: int) -> bool:
    """Whether the mark at index `mark` is the period of an abbreviation ("St.", "approx.") or of an
    initial ("e.g.", "J."), which does not end the sentence."""
    word = _LAST_WORD.search(description, 0, mark) if description[mark] == "." else None
    if word is None:
        return False
    return word.group().lower() in _ABBREVIATIONS or (len(word.group()) == 1 and word.group().isalpha())
