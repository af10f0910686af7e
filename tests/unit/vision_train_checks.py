"""Checks of models.vision.finetune that need torch, run by the torch venv's python
(``tests/unit/test_vision_finetune.py`` starts it; pytest does not collect this file).
Prints one JSON object: check name → "ok" or what went wrong."""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from models.vision import finetune  # noqa: E402
from models.vision.assign import BACKGROUND, REG_BINS, atss_assign, grid  # noqa: E402

CHECKS: dict[str, Callable[[], None]] = {}


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS[fn.__name__] = fn
    return fn


def close(a: float, b: float, tol: float = 1e-5) -> None:
    if not math.isclose(a, b, rel_tol=tol, abs_tol=tol):
        raise AssertionError(f"{a} != {b}")


@check
def qfl_is_zero_when_the_score_is_the_target() -> None:
    target = torch.tensor([[0.3, 0.0]])
    logits = torch.tensor([[math.log(0.3 / 0.7), -30.0]])
    close(float(finetune.quality_focal_loss(logits, target)), 0.0, 1e-6)


@check
def qfl_known_value() -> None:
    # sigmoid(0) = 0.5 against 1: BCE ln 2, modulated by |0.5 - 1|^2.
    close(
        float(finetune.quality_focal_loss(torch.zeros(1, 1), torch.ones(1, 1))), 0.25 * math.log(2)
    )


@check
def dfl_known_values() -> None:
    uniform = torch.zeros(1, 4, REG_BINS)
    close(
        float(finetune.distribution_focal_loss(uniform, torch.full((1, 4), 2.5))[0]),
        math.log(REG_BINS),
    )
    peaked = torch.full((1, 4, REG_BINS), -50.0)
    peaked[..., 2] = peaked[..., 3] = 0.0  # half the mass on bins 2 and 3
    close(float(finetune.distribution_focal_loss(peaked, torch.full((1, 4), 2.5))[0]), math.log(2))
    exact = torch.full((1, 4, REG_BINS), -50.0)
    exact[..., 3] = 50.0
    close(float(finetune.distribution_focal_loss(exact, torch.full((1, 4), 3.0))[0]), 0.0, 1e-4)
    # The last two bins exist for a target between them.
    top = torch.full((1, 4, REG_BINS), -50.0)
    top[..., REG_BINS - 2] = top[..., REG_BINS - 1] = 0.0
    close(
        float(finetune.distribution_focal_loss(top, torch.full((1, 4), REG_BINS - 1.5))[0]),
        math.log(2),
    )


@check
def giou_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    g = finetune.giou(a, b)
    close(float(g[0]), -1 / 3)  # disjoint: 0 - (hull 3 - union 2) / 3
    close(float(g[1]), 1.0)


@check
def decoded_distances_are_the_expected_bin() -> None:
    bins = torch.full((1, 4, REG_BINS), -50.0)
    for edge, k in enumerate((0, 3, 7, 10)):
        bins[0, edge, k] = 50.0
    np.testing.assert_allclose(finetune.decode_distances(bins).numpy(), [[0, 3, 7, 10]], atol=1e-4)


@check
def detection_loss_teaches_the_assigned_cells() -> None:
    centres, strides, slices = grid()
    box = np.array([[100.0, 100.0, 164.0, 164.0]])
    assigned = atss_assign(box, centres, strides, slices)[None]
    logits = torch.full((1, len(centres), 86), -4.6, requires_grad=True)
    bins = torch.zeros((1, len(centres), 4 * REG_BINS), requires_grad=True)
    soft = torch.zeros((1, len(centres), 86))
    soft[0, 0, 3] = 0.7  # a COCO score the original gave somewhere else: kept as a target
    loss, parts = finetune.detection_loss(
        logits, bins, assigned, [box], [np.array([82])], soft, centres, strides
    )
    loss.backward()
    positive = assigned[0] != BACKGROUND
    assert parts["positives"] == int(positive.sum()) > 0
    assert math.isfinite(float(loss))
    # Box gradients reach the positive cells only; class 82 is pushed up there.
    assert bins.grad[0, positive].abs().sum() > 0 and bins.grad[0, ~positive].abs().sum() == 0
    assert (logits.grad[0, positive, 82] < 0).all()
    assert logits.grad[0, 0, 3] < 0  # towards the soft target 0.7
    assert (logits.grad[0, ~positive, 82] > 0).all()  # elsewhere towards 0


@check
def parameters_map_back_to_initializers() -> None:
    weight = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1)
    bias = np.array([0.5, -0.5], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "c_w", "c_b"], ["y"], name="n_conv")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        [numpy_helper.from_array(weight, "c_w"), numpy_helper.from_array(bias, "c_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    net = finetune.convert(model)
    mapping = finetune.parameters_by_initializer(net, model)
    assert set(mapping) == {"c_w", "c_b"}
    np.testing.assert_array_equal(mapping["c_w"].detach().numpy(), weight)
    np.testing.assert_array_equal(mapping["c_b"].detach().numpy(), bias)


@check
def damping_shortens_the_old_rows_steps() -> None:
    param = torch.nn.Parameter(torch.zeros(4, 2))
    before = param.detach()[torch.tensor([True, True, False, False])].clone()
    with torch.no_grad():
        param += 1.0  # the optimiser's step
    finetune._damp([param], [before], torch.tensor([True, True, False, False]), 0.25)
    np.testing.assert_allclose(
        param.detach().numpy(), [[0.25] * 2, [0.25] * 2, [1.0] * 2, [1.0] * 2]
    )


def main() -> int:
    results = {}
    for name, fn in CHECKS.items():
        try:
            fn()
            results[name] = "ok"
        except Exception:  # noqa: BLE001 (every failure is reported, none stops the others)
            results[name] = traceback.format_exc(limit=3)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
