"""models.vision.ocr (and the runner's plumbing) on synthetic inputs whose right answer is
known: no model files, no network. Where a number comes from RapidOCR 3.10 (pyclipper
1.4.0, shapely 2.2.0), the test says so; those were computed once in a throwaway venv."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.export import read_model_info
from models.inference import InferenceError
from models.repository import ServingOptions, build_config
from models.vision import ocr
from models.vision.ocr import (
    CTC_BLANK,
    OcrLine,
    OcrOptions,
    Quad,
    classify_text,
    crop_line,
    ctc_decode,
    db_boxes,
    make_dictionary,
    phone_numbers,
    prepare,
    read_dictionary,
    rec_batch,
    sort_boxes,
    to_original,
    unclip,
)
from models.vision.ocr_models import DET_NAME, DET_OUTPUT, NUM_CLASSES, REC_NAME, REC_OUTPUT
from models.vision.ocr_runner import DET_SERVING, REC_SERVING, OcrReader, expected_models
from streams.batch import InputLine, Rejected
from streams.ocr_cli import image_files, ocr_lines

# ----------------------------------------------------------------------------- CTC


def one_hot(indices: list[int], classes: int, peak: float = 0.9) -> np.ndarray:
    """Per-step probabilities with ``peak`` on the given class, the rest spread evenly."""
    probs = np.full((len(indices), classes), (1 - peak) / (classes - 1), np.float32)
    probs[np.arange(len(indices)), indices] = peak
    return probs


def test_ctc_merges_repeats_drops_blanks_and_keeps_a_letter_repeated_across_a_blank() -> None:
    dictionary = make_dictionary(["a", "b", "c"])  # blank, a, b, c, space
    assert dictionary == (CTC_BLANK, "a", "b", "c", " ")
    steps = [1, 1, 0, 1, 2, 2, 4, 0, 3, 3]  # a a _ a b b ␠ _ c c
    probs = one_hot(steps, len(dictionary))[np.newaxis]
    probs[0, 3, 1] = 0.5  # the second "a" less sure: the score is the mean of kept steps
    [(text, score)] = ctc_decode(probs, dictionary)
    assert text == "aab c"
    assert score == pytest.approx((0.9 + 0.5 + 0.9 + 0.9 + 0.9) / 5)


def test_ctc_of_only_blanks_is_empty_with_score_zero_per_row() -> None:
    dictionary = make_dictionary(["x"])
    probs = np.stack([one_hot([0, 0, 0], 3), one_hot([1, 0, 1], 3)])
    assert ctc_decode(probs, dictionary) == [("", 0.0), ("xx", pytest.approx(0.9))]


def test_ctc_refuses_an_output_that_does_not_fit_the_dictionary() -> None:
    with pytest.raises(ValueError, match="dictionary of 4"):
        ctc_decode(np.zeros((1, 5, 7), np.float32), make_dictionary(["a", "b"]))


def test_dictionary_file_gives_blank_first_and_space_last(tmp_path: Path) -> None:
    path = tmp_path / "dictionary.txt"
    path.write_text("你\n好\n1\n", encoding="utf-8")
    assert read_dictionary(path) == (CTC_BLANK, "你", "好", "1", " ")


def test_missing_dictionary_names_the_command_that_fetches_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m models.vision.ocr_models"):
        read_dictionary(tmp_path / "nope.txt")


# ------------------------------------------------------------------ DB post-processing


def corners(box: np.ndarray) -> list[float]:
    """x0, y0, x1, y1, ... (pytest.approx compares flat sequences)."""
    return np.asarray(box, dtype=np.float64).round(3).reshape(-1).tolist()


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        # RapidOCR 3.10's DBPostProcess.unclip + get_mini_boxes on the same boxes.
        (
            [[10, 20], [110, 20], [110, 40], [10, 40]],
            [[-3.0, 7.0], [123.0, 7.0], [123.0, 53.0], [-3.0, 53.0]],
        ),
        (
            [[10.7, 20.4], [90.2, 20.4], [90.2, 55.9], [10.7, 55.9]],
            [[-10.0, 0.0], [110.0, 0.0], [110.0, 75.0], [-10.0, 75.0]],
        ),
        (
            cv2.boxPoints(((200.5, 120.25), (150.0, 30.0), 20.0)),
            [[122.075, 53.793], [301.928, 118.846], [277.925, 185.207], [98.072, 120.154]],
        ),
    ],
    ids=["axis-aligned", "fractional", "rotated-20deg"],
)
def test_unclip_equals_pyclipper_offsetting(box: list[list[float]], expected: list) -> None:
    mini = ocr._mini_box(cv2.minAreaRect(np.asarray(box, np.float32).reshape(-1, 1, 2)))
    assert corners(ocr._mini_box(unclip(mini, 1.6))) == pytest.approx(corners(expected), abs=2e-3)


def synthetic_map(height: int = 120, width: int = 200) -> np.ndarray:
    prob = np.zeros((height, width), np.float32)
    prob[20:40, 30:130] = 0.9  # a line of text: x 30..129, y 20..39
    prob[70:76, 150:190] = 0.4  # above thresh (0.3) but its mean is under box_thresh (0.5)
    prob[100:102, 10:12] = 0.95  # a speck: 2 px, under the minimum side
    return prob


def test_db_finds_the_text_rectangle_grown_by_the_unclip_distance() -> None:
    found = db_boxes(synthetic_map(), (120, 200))
    assert len(found) == 1
    box, score = found[0]
    # Dilation grows the blob by a pixel right and down: the scored rectangle covers
    # 101 x 21 pixels, 100 x 20 of them at 0.9.
    assert score == pytest.approx(0.9 * 2000 / 2121, abs=1e-4)
    # Its rectangle is 100 x 20 (corner to corner); unclip adds 100 * 20 * 1.6 / 240 =
    # 13.3 px each side.
    x0, y0 = box[0]
    x2, y2 = box[2]
    assert (x0, y0) == pytest.approx((30 - 13, 20 - 13), abs=1)
    assert (x2, y2) == pytest.approx((130 + 13, 40 + 13), abs=1)
    assert corners(box) == corners(ocr.order_clockwise(box))  # TL, TR, BR, BL


def test_db_scales_boxes_to_the_destination_image() -> None:
    [(small, _)] = db_boxes(synthetic_map(), (120, 200))
    [(large, _)] = db_boxes(synthetic_map(), (240, 400))
    assert corners(large) == pytest.approx(corners(small * 2), abs=2)


def test_db_keeps_a_tilted_line_tilted() -> None:
    prob = np.zeros((200, 300), np.float32)
    quad = cv2.boxPoints(((150, 100), (160, 24), 15.0)).astype(np.int32)
    cv2.fillPoly(prob, [quad], 0.95)
    [(box, _)] = db_boxes(prob, (200, 300))
    top = box[1] - box[0]
    assert np.degrees(np.arctan2(top[1], top[0])) == pytest.approx(15, abs=1.5)


def test_db_with_nothing_above_threshold_finds_nothing() -> None:
    assert db_boxes(np.full((64, 64), 0.29, np.float32), (64, 64)) == []


def test_boxes_are_sorted_in_reading_order() -> None:
    def at(x: float, y: float) -> tuple[np.ndarray, float]:
        return np.array([[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], np.float32), 0.9

    row_two_right, row_one_right, row_one_left, row_two_left = (
        at(200, 105), at(200, 52), at(10, 48), at(10, 100)
    )  # fmt: skip
    ordered = sort_boxes([row_two_right, row_one_right, row_one_left, row_two_left])
    assert [b[0][0].tolist() for b in ordered] == [[10, 48], [200, 52], [10, 100], [200, 105]]


# -------------------------------------------------------------------- preprocessing


def test_prepare_raises_the_short_side_to_736_in_multiples_of_32() -> None:
    image = np.full((600, 800, 3), 255, np.uint8)
    image[:, :400] = 0
    prepared = prepare(image)
    # 600 → 736 (x 1.2267), 800 → 981 → 992 (31 x 32).
    assert prepared.det_input.shape == (1, 3, 736, 992)
    assert prepared.det_input.dtype == np.float32
    assert prepared.det_input.min() == -1.0 and prepared.det_input.max() == 1.0
    assert prepared.image.shape == (600, 800, 3) and prepared.pad_top == 0


def test_prepare_limits_the_long_side_and_maps_boxes_back() -> None:
    prepared = prepare(np.zeros((3000, 4000, 3), np.uint8))
    # 3000 x 0.5 = 1500 → 47 x 32; 2000 → 62.5 x 32, rounded half to even (Python's round,
    # as RapidOCR rounds) → 62 x 32.
    assert prepared.image.shape[:2] == (1504, 1984)
    assert prepared.det_input.shape[2] % 32 == 0 and prepared.det_input.shape[3] % 32 == 0
    box = np.array([[0, 0], [1984, 0], [1984, 1504], [0, 1504]], np.float32)
    assert to_original(box, prepared) == ((0, 0), (4000, 0), (4000, 3000), (0, 3000))


def test_a_wide_strip_is_padded_above_and_below_and_boxes_lose_the_padding() -> None:
    prepared = prepare(np.zeros((40, 800, 3), np.uint8))
    # 800 / 40 = 20 > 8: padded to max(800 / 8, 30) x 2 = 200 px high, 80 above.
    assert prepared.pad_top == 80 and prepared.image.shape[:2] == (200, 800)
    box = np.array([[10, 90], [110, 90], [110, 110], [10, 110]], np.float32)
    assert to_original(box, prepared)[0] == (10, 10)


def test_prepare_accepts_grey_and_bgra_and_refuses_floats() -> None:
    assert prepare(np.zeros((64, 64), np.uint8)).image.shape == (64, 64, 3)
    assert prepare(np.zeros((64, 64, 4), np.uint8)).image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="uint8"):
        prepare(np.zeros((64, 64, 3), np.float32))


def test_recognition_batch_is_height_48_padded_to_the_widest_crop() -> None:
    short = np.full((32, 64, 3), 255, np.uint8)  # 2:1 → 96 px wide at height 48
    long = np.full((32, 640, 3), 255, np.uint8)  # 20:1 → 960
    batch = rec_batch([short, long])
    assert batch.shape == (2, 3, 48, 960)
    assert (batch[0, :, :, :96] == 1.0).all() and (batch[0, :, :, 96:] == 0.0).all()
    assert (batch[1] == 1.0).all()
    # Short lines are padded to at least 320 rather than stretched.
    assert rec_batch([short]).shape == (1, 3, 48, 320)


def test_crop_turns_a_tilted_box_upright_and_a_tall_one_sideways() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    quad = cv2.boxPoints(((150, 100), (120, 30), 10.0)).astype(np.float32)
    cv2.fillPoly(image, [quad.astype(np.int32)], (255, 255, 255))
    crop = crop_line(image, ocr.order_clockwise(quad))
    assert crop.shape[:2] == pytest.approx((30, 120), abs=2)
    assert crop[5:-5, 5:-5].min() > 200  # all text, no background: it is upright
    tall = np.array([[10, 10], [40, 10], [40, 130], [10, 130]], np.float32)
    assert crop_line(image, tall).shape[:2] == (30, 120)


# ------------------------------------------------------------------ the text classifier


def line(text: str, width: float = 200, height: float = 40, x: float = 0, y: float = 0) -> OcrLine:
    box: Quad = ((x, y), (x + width, y), (x + width, y + height), (x, y + height))
    return OcrLine(text, box, 0.99)


@pytest.mark.parametrize(
    "texts",
    [
        ["办证", "13912345678"],  # strong word and a mobile number on separate lines
        ["专业开锁 139 1234 5678"],  # ordinary word + a number written in groups
        ["管道疏通", "0532-8888 6666"],  # ordinary word + a Qingdao landline
        ["搬家 400-123-4567"],  # a service number
        ["刻章"],  # strong alone
        ["代开各类发票 微信同号"],
        ["无抵押 贷款 快速放款"],
        ["高薪招聘 日结 １３８００１３８０００"],  # full-width digits
        ["开锁 疏通 搬家"],  # three ordinary words: a list of services
    ],
)
def test_small_ads(texts: list[str]) -> None:
    small_ad, banner, evidence = classify_text([line(t) for t in texts])
    assert small_ad, evidence
    assert not banner


@pytest.mark.parametrize(
    "texts",
    [
        ["专业开锁"],  # a locksmith's sign: ordinary word, no number
        ["联系电话 13912345678"],  # a shop sign's number alone
        ["政务服务中心 办证大厅", "0532-88886666"],  # the government's certificate hall
        ["2024年12月31日 13:00 停水通知"],  # dates and times are not numbers to call
        ["20241231 1300"],
        ["香港中路18号 3号楼2单元1302室"],  # addresses with 号
        ["身份证号 370202199003071234"],  # an ID number contains 139... inside a longer run
        ["订单号 0123456789 招聘会"],  # neither a landline nor an ad
        ["禁止张贴小广告 违者罚款"],  # the notice against small ads
        ["家电维修 回收"],  # two ordinary words on a shop sign, no number
    ],
)
def test_not_small_ads(texts: list[str]) -> None:
    small_ad, _, evidence = classify_text([line(t) for t in texts])
    assert not small_ad, evidence


def test_phone_numbers_found_and_evidence_masks_them() -> None:
    assert phone_numbers("电话:139-1234-5678 或 010 62345678") == ["13912345678", "01062345678"]
    assert phone_numbers("2026-11-20 08:40 第13912345678901号") == []
    _, _, evidence = classify_text([line("办证 13912345678")])
    assert "phone 139****5678" in evidence
    assert not any("13912345678" in e for e in evidence)


def test_banners_are_long_horizontal_slogans() -> None:
    assert classify_text([line("热烈庆祝本店盛大开业", width=600, height=60)]).banner
    assert classify_text([line("全场八折 清仓甩卖最后三天", width=800, height=80)]).banner
    assert classify_text([line("本店优惠活动欢迎选购", width=500, height=50)]).banner  # 1 + 1


@pytest.mark.parametrize(
    ("text", "width", "height", "why"),
    [
        ("热烈庆祝本店盛大开业", 200, 120, "a square-ish poster, not a banner's shape"),
        ("招商银行青岛分行", 600, 60, "a bank's name"),
        ("欢迎光临本店", 500, 60, "one ordinary word"),
        ("开业", 400, 60, "too few characters for a slogan"),
        ("禁止停车违者拖车", 600, 60, "a notice without slogan wording"),
    ],
)
def test_not_banners(text: str, width: float, height: float, why: str) -> None:
    assert not classify_text([line(text, width, height)]).banner, why


def test_a_steep_line_is_not_a_banner() -> None:
    steep: Quad = ((0, 0), (300, 300), (280, 320), (-20, 20))
    assert not classify_text([OcrLine("热烈庆祝本店盛大开业", steep, 0.99)]).banner


def test_line_json_rounds_box_and_score() -> None:
    got = OcrLine("a", ((1.04, 2.0), (3.0, 2.0), (3.0, 4.06), (1.0, 4.0)), 0.987654).to_json()
    assert got == {"text": "a", "box": [[1.0, 2.0], [3.0, 2.0], [3.0, 4.1], [1.0, 4.0]],
                   "score": 0.9877}  # fmt: skip


# ------------------------------------------------------------- serving configuration


def test_variable_dims_are_read_as_minus_one_from_named_dimensions(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "g", [x], [y])
    )
    for key, value in {"citystream.name": "m", "citystream.version": "v1",
                       "citystream.labels": "[]", "citystream.sequence_length": "0"}.items():
        model.metadata_props.add(key=key, value=value)  # fmt: skip
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    info = read_model_info(tmp_path / "m.onnx")
    assert info.inputs[0].dims == (3, -1, -1) and info.outputs[0].dims == (3, -1, -1)


def test_ocr_configs_have_variable_dims_and_a_concrete_warmup() -> None:
    det, rec = expected_models()
    det_config = build_config(det, "cpu", DET_SERVING)
    assert list(det_config.input[0].dims) == [3, -1, -1]
    assert list(det_config.model_warmup[0].inputs["image"].dims) == [3, 64, 64]
    rec_config = build_config(rec, "gpu", REC_SERVING)
    assert list(rec_config.output[0].dims) == [-1, NUM_CLASSES]
    assert list(rec_config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert rec_config.instance_group[0].kind == rec_config.instance_group[0].KIND_GPU
    # Without sample dims the warm-up cannot be written: said at build time, not at load.
    with pytest.raises(ValueError, match="warmup_dims"):
        build_config(rec, "cpu", ServingOptions())


# ------------------------------------------------------- the runner, on a fake backend

GREYS = (0, 60, 120)  # ink of the three synthetic lines; the fake recogniser reads it back
FAKE_DICTIONARY = make_dictionary(["A", "B", "C", *(f"x{i}" for i in range(NUM_CLASSES - 5))])


class FakeBackend:
    """Detection: text wherever the image is darker than mid-grey. Recognition: one
    letter per crop, A/B/C by its ink, at the first step (then blanks). Records calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = inputs["image"]
        self.calls.append((model, batch.shape))
        if model == DET_NAME:
            return {DET_OUTPUT: (batch[:, :1] < 0).astype(np.float32) * 0.95}
        steps = batch.shape[3] // 8
        probs = np.zeros((batch.shape[0], steps, NUM_CLASSES), np.float32)
        probs[:, :, 0] = 1.0
        for n, crop in enumerate(batch):
            grey = (crop.min() * 0.5 + 0.5) * 255
            letter = 1 + int(np.argmin([abs(grey - g) for g in GREYS]))
            probs[n, 0] = 0.0
            probs[n, 0, letter] = 0.97
        return {REC_OUTPUT: probs}

    def check_model(self, expected: object) -> None: ...

    def close(self) -> None: ...


def page(shape: tuple[int, int], rows: list[tuple[int, int, int]]) -> np.ndarray:
    """White page with filled bars (x, y, grey), 200 x 30 px each."""
    image = np.full((*shape, 3), 255, np.uint8)
    for x, y, grey in rows:
        image[y : y + 30, x : x + 200] = grey
    return image


def test_reader_batches_detection_by_size_and_recognition_by_count() -> None:
    backend = FakeBackend()
    reader = OcrReader(backend, FAKE_DICTIONARY, rec_batch_size=2)
    first = page((480, 640), [(300, 300, GREYS[2]), (40, 60, GREYS[0]), (40, 200, GREYS[1])])
    second = page((480, 640), [(100, 100, GREYS[1])])
    third = page((300, 900), [(50, 50, GREYS[2])])  # detected at 736 x 2208, not 736 x 992
    results = reader.read_many([first, second, third])
    assert [[ln.text for ln in lines] for lines in results] == [["A", "B", "C"], ["B"], ["C"]]
    (x0, y0), _, (x2, y2), _ = results[0][0].box
    # The 200 x 30 bar grown by 200 * 30 * 1.6 / 460 = 20.9 px each side.
    assert (x0, y0, x2, y2) == pytest.approx((40 - 21, 60 - 21, 240 + 21, 90 + 21), abs=1)
    det_calls = [shape for model, shape in backend.calls if model == DET_NAME]
    rec_calls = [shape for model, shape in backend.calls if model == REC_NAME]
    assert sorted(s[0] for s in det_calls) == [1, 2]  # the two 640 x 480 pages together
    assert [s[0] for s in rec_calls] == [2, 1, 1, 1]  # in twos, never across images


def test_reader_drops_lines_under_the_text_score() -> None:
    reader = OcrReader(FakeBackend(), FAKE_DICTIONARY, options=OcrOptions(text_score=0.98))
    assert reader.read(page((240, 320), [(20, 20, 0)])) == []


def test_reader_refuses_a_detector_answer_of_the_wrong_shape() -> None:
    class Broken(FakeBackend):
        def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {DET_OUTPUT: np.zeros((1, 1, 8, 8), np.float32)}

    with pytest.raises(InferenceError, match="ocr_det answered"):
        OcrReader(Broken(), FAKE_DICTIONARY).read(page((240, 320), []))


def test_reader_needs_the_recognisers_full_dictionary() -> None:
    with pytest.raises(ValueError, match="dictionary of 5 classes"):
        OcrReader(FakeBackend(), make_dictionary(["a", "b", "c"]))


# -------------------------------------------------------------------- the batch tool


def test_each_input_line_gets_an_answer_or_a_reason(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), page((240, 320), [(20, 20, GREYS[0])]))
    lines = [
        InputLine(1, {"id": "x", "source": str(tmp_path / "a.png")}),
        InputLine(2, {"source": str(tmp_path / "missing.jpg")}),
    ]
    first, second = ocr_lines(lines, OcrReader(FakeBackend(), FAKE_DICTIONARY))
    assert isinstance(first, dict)
    assert list(first) == ["id", "source", "lines", "small_ad", "banner"]
    assert first["id"] == "x" and [ln["text"] for ln in first["lines"]] == ["A"]
    assert (first["small_ad"], first["banner"]) == (False, False)
    assert isinstance(second, Rejected) and "no image file" in second.reason


def test_input_may_be_a_folder_an_image_or_json_lines(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert image_files(tmp_path) == [tmp_path / "a.png", tmp_path / "b.JPG"]
    assert image_files(tmp_path / "a.png") == [tmp_path / "a.png"]
    assert image_files(tmp_path / "photos.jsonl") is None
