"""What the training tokenizer costs a caption that is word for word a human's.

Each Flickr8k test image has five human captions. Each one in turn, passed through a tokenizer
as a model trained on that tokenizer's words would write it, is scored by coco-caption (PTB
tokenizer, Java) against the other four. The mean over the five is the leave-one-out human score
a tokenizer allows: the training tokenizer (`vocabulary.tokenize`) splits "t-shirt" and "boy's"
into words ("t shirt", "boy s") the scorer never sees in its references; PTB words would not.

    python benchmarks/tokenizer_ceiling.py [--root ../shared/data/flickr8k] [--split test]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

from captioner.data.vocabulary import tokenize
from captioner.scoring.coco_metrics import score_captions
from captioner.scoring.ptb_tokenizer import simple_ptb_tokenize
from captioner.sources import load_records

REPO = Path(__file__).resolve().parent.parent


def ptb_words(caption: str) -> list[str]:
    """The words coco-caption's scorers compare (its PTB tokenizer, punctuation dropped)."""
    return simple_ptb_tokenize(caption).split()


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "vocabulary.tokenize (training)": tokenize,
    "PTB words (the scorer's)": ptb_words,
}


def leave_one_out(references: dict[str, list[str]], words: Callable[[str], list[str]]) -> dict[str, float]:
    """Mean over k of the scores of every image's k-th caption (as `words` give it) against the rest."""
    runs = []
    for k in range(min(len(r) for r in references.values())):
        results = {image: " ".join(words(refs[k])) for image, refs in references.items()}
        others = {image: refs[:k] + refs[k + 1:] for image, refs in references.items()}
        runs.append(score_captions(results, others, meteor=False))
    return {name: statistics.mean(run[name] for run in runs) for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "flickr8k")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    records = load_records("flickr8k", args.root, {"layout": "official"})
    references = {r.image_id: list(r.captions) for r in records if r.split == args.split}
    changed = sum(tokenize(c) != ptb_words(c) for refs in references.values() for c in refs)
    print(f"{len(references)} {args.split} images, {sum(map(len, references.values()))} captions; "
          f"{changed} tokenized differently by the two")
    print("| tokenizer | BLEU-1 | BLEU-4 | ROUGE-L | CIDEr-D |\n| --- | --- | --- | --- | --- |")
    for name, words in TOKENIZERS.items():
        scores = leave_one_out(references, words)
        print(f"| {name} | {scores['bleu1']:.4f} | {scores['bleu4']:.4f} | {scores['rouge_l']:.4f} | "
              f"{scores['cider']:.4f} |")


if __name__ == "__main__":
    main()
