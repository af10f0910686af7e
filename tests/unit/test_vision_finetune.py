"""models.vision.finetune's losses, assignment use and weight mapping, checked in the torch
venv (``.cache/vision-train-env``, made by ``make models-city``): torch never enters the
main venv, so ``vision_train_checks.py`` runs there once and each check is a test here.
Skipped, with the reason, where that venv is absent (CI does not build it: 5.5 GB)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = ROOT / ".cache" / "vision-train-env" / "bin" / "python"
CHECKS = (
    "qfl_is_zero_when_the_score_is_the_target",
    "qfl_known_value",
    "dfl_known_values",
    "giou_known_values",
    "decoded_distances_are_the_expected_bin",
    "detection_loss_teaches_the_assigned_cells",
    "parameters_map_back_to_initializers",
    "damping_shortens_the_old_rows_steps",
)


@pytest.fixture(scope="module")
def results() -> dict[str, str]:
    if not TRAIN_PYTHON.is_file():
        pytest.skip(f"no torch venv at {TRAIN_PYTHON.parent.parent} (make models-city creates it)")
    proc = subprocess.run(
        [str(TRAIN_PYTHON), str(Path(__file__).with_name("vision_train_checks.py"))],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_check_ran(results: dict[str, str]) -> None:
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_check(results: dict[str, str], name: str) -> None:
    assert results.get(name) == "ok", results.get(name, "not run")
