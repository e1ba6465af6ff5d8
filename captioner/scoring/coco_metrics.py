"""Caption scores as coco-caption computes them: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

Scores use pycocoevalcap's own scorers on PTB-tokenized text, on the 0-1 scale coco-caption
reports (CIDEr-D ranges to ~10). SPICE is not run: it downloads CoreNLP and fails on Java 17.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from captioner.data.vocabulary import Vocabulary
from captioner.scoring.bleu_statistics import bleu_counts
from captioner.scoring.ptb_tokenizer import simple_ptb_tokenize_all

log = logging.getLogger(__name__)

SCORE_NAMES = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

def java_available() -> bool:
    return shutil.which("java") is not None


def _bundled_jar(module: str, constant: str) -> Path | None:
    """The jar pycocoevalcap ships beside `module` (named by its `constant`), or None where the
    install left it out (a trimmed copy, as the GPU machine's staged packages are)."""
    import importlib

    found = importlib.import_module(module)
    jar = Path(found.__file__).with_name(getattr(found, constant))
    return jar if jar.is_file() else None


def java_ptb_available() -> bool:
    return java_available() and _bundled_jar("pycocoevalcap.tokenizer.ptbtokenizer",
                                             "STANFORD_CORENLP_3_4_1_JAR") is not None


def java_meteor_available() -> bool:
    return java_available() and _bundled_jar("pycocoevalcap.meteor.meteor", "METEOR_JAR") is not None


def java_ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """coco-caption's tokenization: its Stanford PTBTokenizer jar, lower case, punctuation dropped.

    Same jar, flags and filter as pycocoevalcap's PTBTokenizer, but the input file goes to the
    system temp dir (not into site-packages, where a killed run leaves it behind) and the jar's
    progress line is not echoed at every validation.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = _bundled_jar("pycocoevalcap.tokenizer.ptbtokenizer", "STANFORD_CORENLP_3_4_1_JAR")
    if jar is None:
        raise RuntimeError("pycocoevalcap was installed without its PTB tokenizer's jar")
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as text:
        # one line per sentence: Java also breaks lines at \r, U+2028 and U+2029, and one extra
        # line would pair every later reference with the wrong image
        text.write("\n".join(" ".join(s.splitlines()) for s in sentences))
        text.flush()
        result = subprocess.run(
            ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
             "-lowerCase", text.name], capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer ({jar}) failed: {result.stderr.decode()[-2000:]}")
    lines = result.stdout.decode("utf-8").split("\n")
    while len(lines) > len(sentences) and lines[-1] == "":
        lines.pop()
    missing = sentences[len(lines):]  # empty sentences at the end leave no line at all
    lines += [""] * len(missing)
    if len(lines) != len(sentences) or any(s.strip() for s in missing):
        raise RuntimeError(f"the PTB tokenizer ({jar}) returned {len(lines)} lines for {len(sentences)} "
                           "sentences: the captions cannot be paired with their images")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS)
            for line in lines]


def ptb_tokenize(captions: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """PTB-tokenize every caption (Java's Stanford tokenizer when available)."""
    keys = [key for key, texts in captions.items() for _ in texts]
    sentences = [text for texts in captions.values() for text in texts]
    tokenizer = java_ptb_tokenize if java_ptb_available() else simple_ptb_tokenize_all
    tokens = tokenizer(sentences)
    tokenized: dict[Any, list[str]] = {key: [] for key in captions}
    for key, text in zip(keys, tokens, strict=True):
        tokenized[key].append(text)
    return tokenized


@functools.cache
def _meteor() -> Any:
    # METEOR runs as one long-lived Java process; start it once and reuse it.
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def meteor_score(gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> float:
    """Corpus METEOR from the process's METEOR; one whose Java process died (killed, out of
    memory) or whose exchange failed is replaced, and the call tried once more."""
    try:
        return _meteor_once(gts, res)
    except Exception as error:
        log.warning("METEOR failed (%s: %s): starting a new one", type(error).__name__, error)
    try:
        return _meteor_once(gts, res)
    except Exception as error:
        raise RuntimeError(f"METEOR failed twice ({type(error).__name__}: {error}); meteor=false "
                           "leaves it out") from error


def _meteor_once(gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> float:
    meteor = _meteor()
    try:
        if meteor.meteor_p.poll() is not None:
            raise RuntimeError(f"its Java process ended (exit {meteor.meteor_p.returncode})")
        return float(meteor.compute_score(gts, res)[0])
    except BaseException:  # Ctrl+C too: the process is then out of step with its replies
        _discard_meteor(meteor)
        raise


def _discard_meteor(meteor: Any) -> None:
    """Stop a METEOR whose call failed. pycocoevalcap takes its lock without try/finally, so a
    failed call keeps it: the next call would wait forever, and so would `__del__` at exit."""
    _meteor.cache_clear()
    if meteor.lock.locked():
        meteor.lock.release()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()
    with contextlib.suppress(OSError):  # here, where a broken pipe is expected, not in `__del__`
        meteor.meteor_p.stdin.close()


@functools.cache
def _warn_no_java() -> None:
    log.warning("java or pycocoevalcap's METEOR jar not found: METEOR is left out (and, without Java, "
                "captions are tokenized in Python); install a Java runtime (e.g. apt-get install "
                "default-jre) and pycocoevalcap whole for the full metric set")


def score_captions(results: Mapping[Any, str], references: Mapping[Any, Sequence[str]],
                   spice: bool = False, meteor: bool = True) -> dict[str, float]:
    """coco-caption scores of one generated caption per key against its references (see
    `score_captions_per_image`)."""
    return score_captions_per_image(results, references, spice, meteor, per_image=False)[0]


def score_captions_per_image(results: Mapping[Any, str], references: Mapping[Any, Sequence[str]],
                             spice: bool = False, meteor: bool = True, per_image: bool = True
                             ) -> tuple[dict[str, float], dict[Any, dict[str, Any]]]:
    """coco-caption scores of one generated caption per key against its references, and per key
    what a resample of the keys needs to be scored again: its CIDEr-D (the corpus score is their
    mean) and its BLEU counts (`bleu_statistics.COUNTS`; the corpus BLEU sums them).

    `meteor`: METEOR too (its Java process takes ~7 s of CPU to start, once per process).
    `per_image`: False leaves the per-key values out ({}): validation needs the corpus scores only.

    `spice`: also SPICE, if it can run here (it needs Java 8 and downloads Stanford CoreNLP on
    first use); if not, it is left out with a warning. The other scores never depend on it.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(results) != set(references):
        raise ValueError("results and references must have the same keys")
    if not results:
        return {}, {}
    res = ptb_tokenize({key: [text] for key, text in results.items()})
    gts = ptb_tokenize(references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    cider, cider_per_image = Cider().compute_score(gts, res)  # per image in the order of gts' keys
    scores["cider"] = float(cider)
    each = {key: {"cider": float(value), "bleu_counts": bleu_counts(res[key][0], gts[key])}
            for key, value in zip(gts, cider_per_image, strict=True)} if per_image else {}
    if meteor and java_meteor_available():
        scores["meteor"] = meteor_score(gts, res)
    elif meteor:
        _warn_no_java()
    ordered = {name: scores[name] for name in SCORE_NAMES if name in scores}
    if spice and (value := _spice(gts, res)) is not None:
        ordered["spice"] = value
    return ordered, each


def _spice(gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> float | None:
    try:
        from pycocoevalcap.spice.spice import Spice

        return float(Spice().compute_score(gts, res)[0])
    except Exception as error:  # subprocess, download and parse errors alike: SPICE is optional
        log.warning("SPICE could not run and is left out (%s: %s); it needs Java 8 and, once, "
                    "network access to fetch Stanford CoreNLP", type(error).__name__, str(error)[:200])
        return None


class CaptionScores(Metric):
    """Generated token ids + image indices in, coco-caption scores out.

    The state is tensors (ids padded to a fixed width, and image indices), so Lightning/DDP can
    gather it across processes; `compute()` keeps one caption per image, so an image repeated by
    a distributed sampler's padding is scored once. After `compute()`, `captions` maps image
    index -> generated text, and (`per_image=True`) `per_image` image index -> its CIDEr-D and
    BLEU counts.
    """

    full_state_update = False

    def __init__(self, references: Mapping[int, Sequence[str]], vocabulary: Vocabulary, width: int,
                 spice: bool = False, meteor: bool = True, per_image: bool = False):
        super().__init__()
        self.spice, self.meteor, self.keep_per_image = spice, meteor, per_image
        self.references = references
        self.vocabulary = vocabulary
        self.width = width
        self.captions: dict[int, str] = {}
        self.per_image: dict[int, dict[str, Any]] = {}
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        self.add_state("image_index", default=[], dist_reduce_fx="cat")

    def update(self, tokens: torch.Tensor, image_index: torch.Tensor) -> None:
        padded = torch.full((tokens.shape[0], self.width), self.vocabulary.pad_id,
                            dtype=torch.long, device=tokens.device)
        n = min(self.width, tokens.shape[1])
        padded[:, :n] = tokens[:, :n]
        self.tokens.append(padded)
        self.image_index.append(image_index.long())

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.tokens, list) and not self.tokens:  # after a DDP sync it is one tensor
            return {}
        tokens = dim_zero_cat(self.tokens).cpu()
        indices = dim_zero_cat(self.image_index).cpu().tolist()
        captions: dict[int, str] = {}
        for index, row in zip(indices, tokens, strict=True):
            captions.setdefault(int(index), self.vocabulary.decode(row.tolist()))
        self.captions = dict(sorted(captions.items()))
        scores, self.per_image = score_captions_per_image(
            self.captions, {i: self.references[i] for i in self.captions}, self.spice, self.meteor,
            self.keep_per_image)
        return {name: torch.tensor(value, dtype=torch.float64) for name, value in scores.items()}
