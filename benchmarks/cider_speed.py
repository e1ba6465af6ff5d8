"""The self-critical reward's speed: vectorised CIDEr-D (captioner/scoring/cider.py) against pycocoevalcap's
Python CiderScorer, on batches of Flickr8k train captions: `python benchmarks/cider_speed.py [FLICKR8K_DIR]`.

A batch is what one SCST step scores: 32 train images x 5 sampled captions (here: captions of other
train images, so the scores are realistic, not all zero). CiderD takes document frequencies from
all 6,000 train images, computed once; pycocoevalcap recomputes them from the batch every call.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider
from table import machine_row, print_table  # benchmarks/ is on sys.path when run as a script

from captioner.data.vocabulary import tokenize
from captioner.scoring.cider import CiderD

IMAGES, SAMPLES, BATCHES = 32, 5, 20


def main(root: Path) -> None:
    train = set((root / "Flickr_8k.trainImages.txt").read_text().split())
    references: dict[str, list[str]] = defaultdict(list)
    for line in (root / "Flickr8k.token.txt").read_text().splitlines():
        name, _, caption = line.partition("\t")
        if name.split("#")[0] in train:
            references[name.split("#")[0]].append(" ".join(tokenize(caption)))
    keys = sorted(references)
    pool = [caption for key in keys for caption in references[key]]

    began = time.perf_counter()
    cider = CiderD(references)
    build_s = time.perf_counter() - began

    rng = random.Random(0)
    batches = []
    for _ in range(BATCHES):
        images = rng.sample(keys, IMAGES)
        batch_keys = [k for k in images for _ in range(SAMPLES)]
        batches.append((batch_keys, [rng.choice(pool) for _ in batch_keys]))

    began = time.perf_counter()
    for batch_keys, candidates in batches:
        cider.score(candidates, batch_keys)
    ours_s = (time.perf_counter() - began) / BATCHES
    encoded = [(cider.encode(c), np.array([cider.row_of[k] for k in b])) for b, c in batches]
    began = time.perf_counter()
    for (ids, lengths), rows in encoded:
        cider.score_ids(ids, lengths, rows)
    ids_s = (time.perf_counter() - began) / BATCHES

    began = time.perf_counter()
    for batch_keys, candidates in batches:  # one Cider call per sample: keys must be unique
        for j in range(SAMPLES):
            picked = range(j, len(batch_keys), SAMPLES)
            Cider().compute_score({i: references[batch_keys[i]] for i in picked},
                                  {i: [candidates[i]] for i in picked})
    theirs_s = (time.perf_counter() - began) / BATCHES

    captions = IMAGES * SAMPLES

    def rate(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms ({captions / seconds:,.0f} captions/s)"

    print_table([
        machine_row(),
        ("train images / references", f"{len(keys)} / {sum(len(r) for r in references.values())}"),
        ("CiderD build (df + reference vectors, once)", f"{build_s:.2f} s"),
        ("batch", f"{IMAGES} images x {SAMPLES} samples = {captions} captions"),
        ("pycocoevalcap Cider per batch", rate(theirs_s)),
        ("CiderD.score (words) per batch", rate(ours_s)),
        ("CiderD.score_ids (ids, the SCST path)", rate(ids_s)),
        ("speed-up (ids path)", f"{theirs_s / ids_s:.0f}x"),
    ])


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
