"""Text → model inputs: the one preprocessing step shared by training, the batch scorer
and the live agent (so what the model saw in training is what it sees in service).

A report becomes a bag of hashed character n-grams (1..3) with sublinear counts,
L2-normalised, padded to a fixed length so that Triton can batch requests of equal
shape. The models are linear over these buckets, so the ONNX graph only gathers rows.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SEQUENCE_LENGTH = 1024
BUCKETS = 1 << 17
NGRAM_RANGE = (1, 3)
PAD_ID = 0
# Version of this module's behaviour; stored with each model and checked at load, so a
# model trained with other preprocessing cannot be served by this code silently.
FEATURES_VERSION = "char1-3-crc32-b17-l1024-simplified-v2"

# Runs of digits say little about the problem (house numbers, phone numbers, dates);
# folding them keeps the n-grams about words. Latin letters are lower-cased by NFKC+lower.
_DIGITS = re.compile(r"\d+")
_SEPARATORS = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    token_ids: np.ndarray  # int64 [n, SEQUENCE_LENGTH]
    token_weights: np.ndarray  # float32 [n, SEQUENCE_LENGTH]

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def as_inputs(self) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids, "token_weights": self.token_weights}


@lru_cache(maxsize=1)
def _simplified() -> dict[int, str]:
    """Traditional -> simplified characters (jionlp's table, via the gazetteer's loader):
    a report written in 繁體 gives the same n-grams as one in simplified characters."""
    from processors.gazetteer import load_lexicon

    return {ord(t): s for t, s in load_lexicon().traditional.items()}


def normalise(text: str) -> list[str]:
    """Text pieces between separators: NFKC, simplified characters, lower case, digits
    folded to '0'."""
    folded = unicodedata.normalize("NFKC", text).translate(_simplified()).lower()
    folded = _DIGITS.sub("0", folded)
    return [piece for piece in _SEPARATORS.split(folded) if piece]


@lru_cache(maxsize=1 << 18)
def bucket(gram: str) -> int:
    """A stable bucket in 1..BUCKETS-1 (0 is padding); crc32 is the same in every process,
    unlike Python's salted ``hash``. Cached: reports share most of their n-grams, and the
    lookup costs a fifth of the hash (half the featurising time on the live path)."""
    return 1 + zlib.crc32(gram.encode("utf-8")) % (BUCKETS - 1)


def ngram_counts(text: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    low, high = NGRAM_RANGE
    for piece in normalise(text):
        size = len(piece)
        for n in range(low, high + 1):
            for i in range(size - n + 1):
                b = bucket(piece[i : i + n])
                counts[b] = counts.get(b, 0) + 1
    return counts


def encode_text(text: str) -> tuple[np.ndarray, np.ndarray]:
    """One report's (ids, weights), each of length SEQUENCE_LENGTH."""
    counts = ngram_counts(text)
    ids = np.zeros(SEQUENCE_LENGTH, dtype=np.int64)
    weights = np.zeros(SEQUENCE_LENGTH, dtype=np.float32)
    if not counts:
        return ids, weights
    # A very long letter keeps its most frequent n-grams (ties by bucket, deterministic).
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:SEQUENCE_LENGTH]
    values = [1.0 + math.log(c) for _, c in items]
    norm = math.sqrt(sum(v * v for v in values))
    ids[: len(items)] = [b for b, _ in items]
    weights[: len(items)] = [v / norm for v in values]
    return ids, weights


def encode_batch(texts: Sequence[str]) -> FeatureBatch:
    ids = np.zeros((len(texts), SEQUENCE_LENGTH), dtype=np.int64)
    weights = np.zeros((len(texts), SEQUENCE_LENGTH), dtype=np.float32)
    for row, text in enumerate(texts):
        ids[row], weights[row] = encode_text(text)
    return FeatureBatch(ids, weights)


def to_sparse_rows(batch: FeatureBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts (data, indices, indptr) of a batch, for training on scipy sparse matrices:
    the same numbers the ONNX graph multiplies, laid out for scikit-learn."""
    mask = batch.token_weights != 0
    counts = mask.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return (
        batch.token_weights[mask].astype(np.float64),
        batch.token_ids[mask].astype(np.int64),
        indptr,
    )
