"""Fine-tuning NanoDet's head on the composed city scenes, in the torch venv
(``.cache/vision-train-env``; ``models.vision.city`` runs ``python -m
models.vision.finetune DATA_DIR`` there). Never imported by the main venv: it needs torch.

What it gets (``models.vision.city`` writes it, ``DATA_DIR``):

* ``head.onnx``: the detector's head, cut from the converted NanoDet with its class conv
  extended from 80 to 86 classes and without the final sigmoid (logits, for a stable
  loss); ``onnx2torch`` makes it a torch module;
* ``features_<stride>.npy`` [N, 128, side, side] float16: the frozen backbone and neck's
  output on each training image, computed once by onnxruntime (the backbone is not
  trained: on 2 shared CPU cores a full forward/backward pass takes 0.3-0.6 s an image,
  the head alone on cached features a fraction of that);
* ``labels.npz``: boxes (416×416 input pixels), classes (0-79 COCO pseudo-labels, 80-85
  city classes), the image each belongs to; and the original model's COCO scores on
  each image, sparse (image, cell, class, score), outside the pasted objects: targets
  that keep the COCO classes where they were (distillation) instead of pushing every
  unlabelled COCO score to 0;
* ``check_features_<stride>.npy`` float32 and ``config.json``.

What it writes: ``weights.npz`` (ONNX initializer name → trained array), ``check.npz``
(the trained head's outputs on the check features, for the ONNX parity check) and
``train-log.json``.

Losses as GFL/NanoDet: quality focal loss on the class scores (the positive's target is
the IoU of its predicted box), distribution focal loss on the edge bins and GIoU on the
decoded boxes, positives from ``models.vision.assign`` (ATSS-lite).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from onnx2torch import convert

from models.vision.assign import BACKGROUND, REG_BINS, atss_assign, distance_targets, grid

QFL_BETA = 2.0
WEIGHT_QFL, WEIGHT_DFL, WEIGHT_GIOU = 1.0, 0.25, 2.0  # NanoDet's loss weights


# --------------------------------------------------------------------------------- losses


def quality_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, beta: float = QFL_BETA
) -> torch.Tensor:
    """QFL (GFL, Li et al. 2020), summed: BCE against a soft target, scaled by
    |sigmoid(logit) - target|^beta so confident right answers cost little."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * (logits.sigmoid() - target).abs().pow(beta)).sum()


def distribution_focal_loss(bins: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL per positive: bins [P, 4, REG_BINS] logits, target [P, 4] distances in strides
    (0 ≤ t < REG_BINS - 1); cross-entropy towards the two bins around t, weighted by
    nearness. Returns [P] (mean over the four edges)."""
    left = target.floor().long().clamp(0, REG_BINS - 2)
    right = left + 1
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    flat = bins.reshape(-1, REG_BINS)
    loss = F.cross_entropy(flat, left.reshape(-1), reduction="none") * weight_left.reshape(-1)
    loss = loss + F.cross_entropy(flat, right.reshape(-1), reduction="none") * weight_right.reshape(
        -1
    )
    return loss.reshape(-1, 4).mean(dim=1)


def giou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised IoU [P] of matching boxes (x1, y1, x2, y2)."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (
        torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])
    ).prod(dim=1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def decode_distances(bins: torch.Tensor) -> torch.Tensor:
    """Bins [P, 4, REG_BINS] logits → expected distances [P, 4] in strides."""
    project = torch.arange(REG_BINS, dtype=bins.dtype, device=bins.device)
    return bins.softmax(dim=-1) @ project


def detection_loss(
    logits: torch.Tensor,
    bins: torch.Tensor,
    assigned: np.ndarray,
    gt_boxes: list[np.ndarray],
    gt_classes: list[np.ndarray],
    soft: torch.Tensor,
    centres: np.ndarray,
    cell_strides: np.ndarray,
) -> tuple[torch.Tensor, dict[str, float | int]]:
    """The batch's loss. ``logits`` [B, A, C], ``bins`` [B, A, 4·REG_BINS]; ``assigned``
    [B, A] ground-truth index per cell (``BACKGROUND`` for none); ``soft`` [B, A, C] the
    class targets of unassigned cells (0, or the original model's COCO score)."""
    batch, cells, _ = logits.shape
    target = soft.clone()
    b_idx, a_idx = np.nonzero(assigned != BACKGROUND)
    positives = len(b_idx)
    if positives:
        g_idx = assigned[b_idx, a_idx]
        boxes = np.stack([gt_boxes[b][g] for b, g in zip(b_idx, g_idx, strict=True)])
        classes = np.array([gt_classes[b][g] for b, g in zip(b_idx, g_idx, strict=True)])
        strides_t = torch.as_tensor(cell_strides[a_idx], dtype=logits.dtype)[:, None]
        centres_t = torch.as_tensor(centres[a_idx], dtype=logits.dtype)
        pos_bins = bins[b_idx, a_idx].reshape(-1, 4, REG_BINS)
        d = decode_distances(pos_bins) * strides_t
        pred_boxes = torch.cat([centres_t - d[:, :2], centres_t + d[:, 2:]], dim=1)
        gt_t = torch.as_tensor(boxes, dtype=logits.dtype)
        g = giou(pred_boxes, gt_t)
        with torch.no_grad():
            quality = _iou(pred_boxes, gt_t).clamp(min=0)
            # GFL weights each box's regression by the cell's confidence.
            weight = logits[b_idx, a_idx].sigmoid().max(dim=1).values
        target[b_idx, a_idx] = 0.0  # a positive cell teaches its own class only
        target[b_idx, a_idx, classes] = quality
        dist_t = torch.as_tensor(
            distance_targets(boxes, centres[a_idx], cell_strides[a_idx]), dtype=logits.dtype
        )
        weight_sum = weight.sum().clamp(min=1e-6)
        loss_giou = ((1 - g) * weight).sum() / weight_sum
        loss_dfl = (distribution_focal_loss(pos_bins, dist_t) * weight).sum() / weight_sum
    else:
        loss_giou = loss_dfl = logits.sum() * 0
    loss_qfl = quality_focal_loss(logits, target) / max(1, positives)
    total = WEIGHT_QFL * loss_qfl + WEIGHT_GIOU * loss_giou + WEIGHT_DFL * loss_dfl
    parts: dict[str, float | int] = {
        "qfl": float(loss_qfl.detach()),
        "giou": float(loss_giou.detach()),
        "dfl": float(loss_dfl.detach()),
        "positives": positives,
        "batch": batch,
        "cells": cells,
    }
    return total, parts


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = (
        (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1) + (b[:, 2:] - b[:, :2]).prod(dim=1) - inter
    )
    return inter / union.clamp(min=1e-6)


# ---------------------------------------------------------------------------------- data


class TrainingData:
    """The cached features, labels and soft targets of ``DATA_DIR``."""

    def __init__(self, data_dir: Path, strides: tuple[int, ...], num_classes: int) -> None:
        self.features = [np.load(data_dir / f"features_{s}.npy", mmap_mode="r") for s in strides]
        self.size = len(self.features[0])
        with np.load(data_dir / "labels.npz") as npz:
            labels = {key: npz[key] for key in npz.files}
        self.num_classes = num_classes
        self.centres, self.cell_strides, self.slices = grid(strides=strides)
        order = np.argsort(labels["image"], kind="stable")
        image, boxes, classes = (
            labels["image"][order],
            labels["boxes"][order],
            labels["classes"][order],
        )
        bounds = np.searchsorted(image, np.arange(self.size + 1))
        self.boxes = [boxes[bounds[i] : bounds[i + 1]].astype(np.float64) for i in range(self.size)]
        self.classes = [
            classes[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(self.size)
        ]
        # Assignment depends only on the boxes: once per image, before training.
        self.assigned = np.stack([
            atss_assign(self.boxes[i], self.centres, self.cell_strides, self.slices)
            for i in range(self.size)
        ])  # fmt: skip
        soft_order = np.argsort(labels["soft_image"], kind="stable")
        self.soft_image = labels["soft_image"][soft_order]
        self.soft_cell = labels["soft_cell"][soft_order].astype(np.int64)
        self.soft_class = labels["soft_class"][soft_order].astype(np.int64)
        self.soft_score = labels["soft_score"][soft_order].astype(np.float32)
        self.soft_bounds = np.searchsorted(self.soft_image, np.arange(self.size + 1))

    def batch(
        self, indices: np.ndarray
    ) -> tuple[list[torch.Tensor], np.ndarray, list[np.ndarray], list[np.ndarray], torch.Tensor]:
        features = [torch.from_numpy(np.asarray(f[indices], np.float32)) for f in self.features]
        soft = torch.zeros((len(indices), len(self.centres), self.num_classes))
        for row, i in enumerate(indices):
            lo, hi = self.soft_bounds[i], self.soft_bounds[i + 1]
            soft[row, self.soft_cell[lo:hi], self.soft_class[lo:hi]] = torch.from_numpy(
                self.soft_score[lo:hi]
            )
        return (
            features,
            self.assigned[indices],
            [self.boxes[i] for i in indices],
            [self.classes[i] for i in indices],
            soft,
        )


# ------------------------------------------------------------------------------ training


def load_head(path: Path) -> tuple[torch.nn.Module, onnx.ModelProto]:
    model = onnx.load(str(path))
    return convert(model), model


def parameters_by_initializer(
    net: torch.nn.Module, model: onnx.ModelProto
) -> dict[str, torch.nn.Parameter]:
    """ONNX initializer name → the torch parameter onnx2torch made of it (Conv weights and
    biases; onnx2torch names each module after its node)."""
    params = dict(net.named_parameters())
    mapping: dict[str, torch.nn.Parameter] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        for init_name, attr in zip(node.input[1:], ("weight", "bias"), strict=False):
            key = f"{node.name}.{attr}"
            if key not in params:
                raise RuntimeError(f"onnx2torch made no parameter {key} for Conv {node.name}")
            mapping[init_name] = params[key]
    unmapped = set(params) - {f"{n.name}.{a}" for n in model.graph.node for a in ("weight", "bias")}
    if unmapped:
        raise RuntimeError(f"parameters with no ONNX initializer: {sorted(unmapped)}")
    return mapping


@torch.no_grad()
def _damp(
    params: list[torch.nn.Parameter], before: list[torch.Tensor], rows: torch.Tensor, scale: float
) -> None:
    """Shorten the last step of ``rows`` of each parameter to ``scale`` of its length."""
    for param, old in zip(params, before, strict=True):
        param[rows] = old + scale * (param[rows] - old)


def split_outputs(
    outputs: tuple[torch.Tensor, ...], levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's (scores, bins) per level → logits [B, A, C] and bins [B, A, 44]."""
    scores = torch.cat([outputs[2 * k] for k in range(levels)], dim=1)
    bins = torch.cat([outputs[2 * k + 1] for k in range(levels)], dim=1)
    return scores, bins


def train(data_dir: Path, log: Any = print) -> dict[str, Any]:
    config = json.loads((data_dir / "config.json").read_text())
    torch.manual_seed(config["seed"])
    torch.set_num_threads(config["threads"])
    torch.use_deterministic_algorithms(True)
    strides = tuple(config["strides"])
    net, model = load_head(data_dir / "head.onnx")
    mapping = parameters_by_initializer(net, model)
    data = TrainingData(data_dir, strides, config["num_classes"])
    # The pretrained rows of the class convs (COCO classes and box bins) move less than
    # the new classes' rows. Adam's steps ignore a gradient's scale, so the old rows'
    # steps themselves are shortened, after each optimiser step (``_damp``).
    rows = config["num_classes"] + 4 * REG_BINS
    old_rows = torch.ones(rows, dtype=torch.bool)
    old_rows[config["new_class_rows"][0] : config["new_class_rows"][1]] = False
    damped = [mapping[name] for name in config["class_conv_initializers"]]
    if any(p.shape[0] != rows for p in damped):
        raise RuntimeError(f"class convs must have {rows} output rows: {[p.shape for p in damped]}")
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )
    steps, batch_size = config["steps"], config["batch_size"]
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps))
        ),
    )
    rng = np.random.default_rng(config["seed"])
    order = np.concatenate(
        [rng.permutation(data.size) for _ in range(steps * batch_size // data.size + 1)]
    )
    started = time.monotonic()
    history = []
    done = 0
    net.train()
    for step in range(steps):
        if time.monotonic() - started > config["time_limit_s"]:
            log(f"stopping at step {step} of {steps}: the time limit of {config['time_limit_s']} s")
            break
        indices = np.sort(order[step * batch_size : (step + 1) * batch_size])
        features, assigned, boxes, classes, soft = data.batch(indices)
        logits, bins = split_outputs(net(*features), len(strides))
        loss, parts = detection_loss(
            logits, bins, assigned, boxes, classes, soft, data.centres, data.cell_strides
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)  # NanoDet's clip
        before = [p.detach()[old_rows].clone() for p in damped]
        optimiser.step()
        _damp(damped, before, old_rows, config["old_row_lr_scale"])
        schedule.step()
        done = step + 1
        if step % 25 == 0 or step == steps - 1:
            entry = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in parts.items()},
                "seconds": round(time.monotonic() - started, 1),
            }
            history.append(entry)
            log(json.dumps(entry))
    seconds = time.monotonic() - started
    weights = {name: p.detach().numpy().astype(np.float32) for name, p in mapping.items()}
    np.savez(data_dir / "weights.npz", **weights)
    net.eval()
    with torch.no_grad():
        checks = [torch.from_numpy(np.load(data_dir / f"check_features_{s}.npy")) for s in strides]
        outputs = net(*checks)
    np.savez(data_dir / "check.npz", **{f"output_{k}": o.numpy() for k, o in enumerate(outputs)})
    result = {
        "steps_done": done,
        "steps_planned": steps,
        "stopped_by_time_limit": done < steps,
        "train_seconds": round(seconds, 1),
        "images": data.size,
        "positives_per_image": round(float((data.assigned != BACKGROUND).sum(axis=1).mean()), 2),
        "history": history,
        "torch": torch.__version__,
    }
    (data_dir / "train-log.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.vision.finetune")
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    result = train(args.data_dir, log=lambda line: print(line, flush=True))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
