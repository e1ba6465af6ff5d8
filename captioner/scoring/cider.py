"""CIDEr-D in numpy, vectorised over a batch of captions: the self-critical reward.

Scores equal pycocoevalcap's `Cider` (coco-caption's CIDEr-D: tf-idf of 1-4-grams, clipped
counts, a Gaussian length penalty with sigma 6, x10) on the same tokenized captions, but the
reference side is done once: document frequencies and every reference's n-gram vector are
computed in the constructor, and a batch of candidates is scored with a few array operations
instead of Python loops over n-grams and references.

Two ways to set the document frequencies:
- from the references being scored against (`CiderD(references)`): what pycocoevalcap does
  on an evaluated set (IDF from the evaluated images' references);
- from another corpus (`CiderD(references, document_frequency_from=train_references)`): the
  self-critical reward uses the train references for every batch, as Rennie et al. do.

As in coco-caption, a caption's "length" in the penalty is its number of bigrams (len - 1):
its `counts2vec` adds up term frequencies of n == 1, the bigram slot. Kept for equality.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

ORDERS = 4  # 1- to 4-grams
# An n-gram is one int64: its words' ids + 1 as digits in base _BASE (disjoint ranges per order,
# since no digit is 0). _BASE ** 4 < 2 ** 63, so ids must stay below _BASE - 1.
_BASE = 55_000

Words = str | Sequence[str]  # a tokenized caption: words joined by spaces, or a list of words


def _split(caption: Words) -> Sequence[str]:
    return caption.split() if isinstance(caption, str) else caption


def _ngrams(ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram (n = 1..4) of each row of `ids` (N, L), within its length: (row, key)."""
    rows, keys = [], []
    width = ids.shape[1]
    for n in range(1, ORDERS + 1):
        if width < n:
            break
        key = np.zeros((ids.shape[0], width - n + 1), dtype=np.int64)
        for i in range(n):
            key = key * _BASE + (ids[:, i: width - n + 1 + i] + 1)
        inside = np.arange(width - n + 1)[None, :] + n <= lengths[:, None]
        rows.append(np.nonzero(inside)[0])
        keys.append(key[inside])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(keys)


def _order(keys: np.ndarray) -> np.ndarray:
    """0 for unigrams .. 3 for 4-grams, read off the key's size."""
    return np.searchsorted(_BASE ** np.arange(1, ORDERS, dtype=np.int64), keys, side="right")


def _count(rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (row, key) pairs and how often each occurs."""
    if len(keys) == 0:
        return rows, keys, np.zeros(0)
    order = np.lexsort((keys, rows))
    rows, keys = rows[order], keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (keys[1:] != keys[:-1])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(keys)))
    return rows[starts], keys[starts], counts.astype(np.float64)


def _expand(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [start, end): (which range, position) of every element, ranges concatenated."""
    counts = ends - starts
    owner = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.repeat(starts, counts) + offsets


class CiderD:
    """CIDEr-D of candidate captions against the references of their images.

    `references`: image key -> tokenized reference captions (each a string of space-separated
    words or a list of words). `document_frequency_from`: the corpus (same form) whose images
    give the document frequencies; default `references` themselves.
    """

    def __init__(self, references: Mapping[Hashable, Sequence[Words]],
                 document_frequency_from: Mapping[Hashable, Sequence[Words]] | None = None,
                 sigma: float = 6.0):
        if not references:
            raise ValueError("CiderD needs references for at least one image")
        empty = [key for key, refs in references.items() if len(refs) == 0]
        if empty:
            raise ValueError(f"CiderD: image {empty[0]!r} has no reference captions")
        self.sigma = sigma
        self.words: dict[str, int] = {}
        self.image_keys = list(references)
        self.row_of = {key: row for row, key in enumerate(self.image_keys)}

        ids, lengths, image_of_ref = self._encode_corpus(references)
        ref_rows, ref_keys = _ngrams(ids, lengths)
        if document_frequency_from is None:
            df_images, df_keys = image_of_ref[ref_rows], ref_keys
            corpus_size = len(references)
        else:
            df_ids, df_lengths, df_image = self._encode_corpus(document_frequency_from)
            df_rows, df_keys = _ngrams(df_ids, df_lengths)
            df_images, corpus_size = df_image[df_rows], len(document_frequency_from)
        # Document frequency: in how many images' references an n-gram occurs.
        _, unique_keys, _ = _count(df_images, df_keys)
        self._df_keys, self._df_counts = np.unique(unique_keys, return_counts=True)
        self._log_corpus = float(np.log(float(corpus_size)))

        # Every reference's tf-idf vector, as (reference, n-gram key, weight) entries.
        ref_rows, ref_keys, tf = _count(ref_rows, ref_keys)
        weights = tf * (self._log_corpus - np.log(np.maximum(1.0, self._document_frequency(ref_keys))))
        norms = np.bincount(ref_rows * ORDERS + _order(ref_keys), weights ** 2,
                            minlength=len(ids) * ORDERS).reshape(len(ids), ORDERS)

        # Per image: its references side by side in columns (padded to the most references).
        refs_per_image = np.bincount(image_of_ref, minlength=len(self.image_keys))
        first_ref = np.cumsum(refs_per_image) - refs_per_image
        column = np.arange(len(ids)) - first_ref[image_of_ref]
        self._refs_per_image = refs_per_image.astype(np.float64)
        width = int(refs_per_image.max())
        self._width = width
        self._ref_norm = np.zeros((len(self.image_keys), width, ORDERS))
        self._ref_norm[image_of_ref, column] = np.sqrt(norms)
        self._ref_length = np.zeros((len(self.image_keys), width))
        self._ref_length[image_of_ref, column] = np.maximum(lengths - 1, 0)  # bigrams, as coco-caption

        # Entries sorted by (image, n-gram): a candidate n-gram finds its image's entries by search.
        self._ref_ngrams = np.unique(ref_keys)
        pair = image_of_ref[ref_rows] * len(self._ref_ngrams) + np.searchsorted(self._ref_ngrams, ref_keys)
        order = np.argsort(pair, kind="stable")
        self._entry_pair = pair[order]
        self._entry_slot = (column[ref_rows] * ORDERS + _order(ref_keys))[order]
        self._entry_weight = weights[order]

    # --- words -> ids ---

    def _encode_corpus(self, corpus: Mapping[Hashable, Sequence[Words]]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        captions = [_split(caption) for refs in corpus.values() for caption in refs]
        image = np.repeat(np.arange(len(corpus)), [len(refs) for refs in corpus.values()])
        for caption in captions:
            for word in caption:
                self.words.setdefault(word, len(self.words))
        ids, lengths = self._pad([[self.words[w] for w in caption] for caption in captions])
        return ids, lengths, image

    @staticmethod
    def _pad(captions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(c) for c in captions], dtype=np.int64)
        ids = np.zeros((len(captions), int(lengths.max()) if len(captions) else 0), dtype=np.int64)
        for row, caption in enumerate(captions):
            ids[row, : len(caption)] = caption
        return ids, lengths

    def encode(self, captions: Sequence[Words]) -> tuple[np.ndarray, np.ndarray]:
        """Candidate captions -> padded ids (N, L) and lengths; words no reference has get new ids."""
        unseen: dict[str, int] = {}
        known = self.words

        def word_id(word: str) -> int:
            return known[word] if word in known else unseen.setdefault(word, len(known) + len(unseen))

        return self._pad([[word_id(w) for w in _split(caption)] for caption in captions])

    def ids_of_words(self, words: Sequence[str]) -> np.ndarray:
        """Our id of each word of a vocabulary (e.g. `Vocabulary.words`); words no reference has
        (`<unk>`, specials) get ids of their own, which match nothing."""
        unseen = iter(range(len(self.words), len(self.words) + len(words)))
        return np.array([self.words[w] if w in self.words else next(unseen) for w in words], dtype=np.int64)

    def _document_frequency(self, keys: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self._df_keys, keys), len(self._df_keys) - 1)
        return np.where(self._df_keys[at] == keys, self._df_counts[at], 0).astype(np.float64)

    # --- scoring ---

    def score(self, candidates: Sequence[Words], keys: Sequence[Hashable]) -> np.ndarray:
        """CIDEr-D of each candidate caption against the references of image `keys[i]`."""
        if len(candidates) != len(keys):
            raise ValueError(f"{len(candidates)} candidates but {len(keys)} image keys")
        missing = [key for key in keys if key not in self.row_of]
        if missing:
            raise KeyError(f"CiderD has no references for image {missing[0]!r}")
        ids, lengths = self.encode(candidates)
        return self.score_ids(ids, lengths, np.array([self.row_of[k] for k in keys], dtype=np.int64))

    def score_ids(self, ids: np.ndarray, lengths: np.ndarray, images: np.ndarray) -> np.ndarray:
        """CIDEr-D of captions given as our word ids (N, L) with lengths (N,), against the
        references of image rows `images` (N,) (positions in `image_keys`)."""
        ids, lengths, images = (np.asarray(a, dtype=np.int64) for a in (ids, lengths, images))
        count = len(lengths)
        if count and ids.size and ids.max() >= _BASE - 1:
            raise ValueError(f"word ids must stay below {_BASE - 1} (got {ids.max()})")
        rows, keys, tf = _count(*_ngrams(ids, lengths))
        orders = _order(keys)
        weights = tf * (self._log_corpus - np.log(np.maximum(1.0, self._document_frequency(keys))))
        norms = np.sqrt(np.bincount(rows * ORDERS + orders, weights ** 2,
                                    minlength=count * ORDERS)).reshape(count, ORDERS)

        # Clipped products min(candidate, reference) * reference, for n-grams both have.
        at = np.minimum(np.searchsorted(self._ref_ngrams, keys), len(self._ref_ngrams) - 1)
        known = self._ref_ngrams[at] == keys
        pair = images[rows[known]] * len(self._ref_ngrams) + at[known]
        owner, entry = _expand(np.searchsorted(self._entry_pair, pair, side="left"),
                               np.searchsorted(self._entry_pair, pair, side="right"))
        mine = np.flatnonzero(known)[owner]
        ref_weight = self._entry_weight[entry]
        products = np.minimum(weights[mine], ref_weight) * ref_weight
        slots = self._width * ORDERS
        similarity = np.bincount(rows[mine] * slots + self._entry_slot[entry], products,
                                 minlength=count * slots).reshape(count, self._width, ORDERS)

        denominator = norms[:, None, :] * self._ref_norm[images]
        similarity = np.where(denominator != 0, similarity / np.where(denominator != 0, denominator, 1.0),
                              similarity)
        delta = np.maximum(lengths - 1, 0)[:, None] - self._ref_length[images]
        similarity *= np.exp(-(delta ** 2) / (2 * self.sigma ** 2))[..., None]
        return 10.0 * similarity.sum(axis=1).mean(axis=1) / self._refs_per_image[images]


def cider_d(results: Mapping[Hashable, Words], references: Mapping[Hashable, Sequence[Words]]
            ) -> tuple[float, np.ndarray]:
    """pycocoevalcap's `Cider().compute_score` on tokenized captions: (mean, per-image scores)
    in the references' key order, document frequencies from these references."""
    if set(results) != set(references):
        raise ValueError("results and references must have the same image keys")
    scores = CiderD(references).score([results[key] for key in references], list(references))
    return float(scores.mean()), scores
