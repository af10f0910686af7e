from __future__ import annotations

import subprocess
import sys

import numpy as np

from models.features import (
    BUCKETS,
    SEQUENCE_LENGTH,
    bucket,
    encode_batch,
    encode_text,
    normalise,
    to_sparse_rows,
)


def test_normalise_folds_width_case_digits_and_punctuation():
    assert normalise("ＡＢＣ路１２号，井盖！！ Ok") == ["abc路0号", "井盖", "ok"]


def test_traditional_characters_give_the_simplified_ngrams():
    assert normalise("樹木倒伏，馬路上") == normalise("树木倒伏，马路上")


def test_encoding_is_fixed_length_and_l2_normalised():
    ids, weights = encode_text("小区门口垃圾成堆没人清理")
    assert ids.shape == weights.shape == (SEQUENCE_LENGTH,)
    assert ids.dtype == np.int64 and weights.dtype == np.float32
    assert np.isclose(float(np.sum(weights**2)), 1.0, atol=1e-5)
    assert (ids[weights == 0] == 0).all() and (ids[weights > 0] > 0).all()
    assert ids.max() < BUCKETS


def test_repeated_ngrams_weigh_more_but_sublinearly():
    ids, weights = encode_text("吵吵吵吵 安静")
    w = dict(zip(ids.tolist(), weights.tolist(), strict=True))
    assert w[bucket("吵")] > w[bucket("安")]
    assert w[bucket("吵")] < 4 * w[bucket("安")]


def test_empty_text_encodes_to_padding():
    ids, weights = encode_text("！！！")
    assert not ids.any() and not weights.any()


def test_long_text_keeps_most_frequent_ngrams_deterministically():
    text = "".join(chr(0x4E00 + i) for i in range(3000)) + "井盖" * 50
    a, wa = encode_text(text)
    b, wb = encode_text(text)
    assert (a == b).all() and (wa == wb).all()
    assert bucket("井盖") in set(a.tolist())
    assert (wa > 0).all()


def test_buckets_are_stable_across_processes():
    # Python's hash() is salted per process; the features must not be.
    code = "from models.features import bucket; print(bucket('井盖'), bucket('暖气不热'))"
    out = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert out == {f"{bucket('井盖')} {bucket('暖气不热')}\n"}


def test_batch_rows_equal_single_encodings_and_sparse_layout():
    texts = ["暖气不热", "路灯不亮了", "！"]
    batch = encode_batch(texts)
    for row, text in enumerate(texts):
        ids, weights = encode_text(text)
        assert (batch.token_ids[row] == ids).all()
        assert (batch.token_weights[row] == weights).all()
    data, indices, indptr = to_sparse_rows(batch)
    assert indptr[-1] == len(data) == len(indices)
    assert indptr[3] - indptr[2] == 0  # the empty text has no features
    assert np.isclose(np.sum(data[indptr[0] : indptr[1]] ** 2), 1.0)
