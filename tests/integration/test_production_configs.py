"""Static checks of infra/production: promtool on the Prometheus files, structure elsewhere.

No Docker here, so the compose file gets a textual check rather than `docker compose config`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROD = Path(__file__).resolve().parents[2] / "infra" / "production"
METRICS = {
    "citystream_events_in_total",
    "citystream_events_out_total",
    "citystream_dead_letters_total",
    "citystream_sink_errors_total",
    "citystream_sink_flush_seconds_bucket",
    "citystream_ingest_latency_seconds_bucket",
    "citystream_consumer_lag",
    "citystream_sink_healthy",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool missing: `make system-deps` installs it (Debian package prometheus)")
    return subprocess.run(
        ["promtool", *args], cwd=PROD, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=["config", "rules", "rule-unit-tests"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_targets() -> None:
    text = (PROD / "prometheus.yml").read_text()
    assert '"worker:6066"' in text
    assert '"triton:8002"' in text


def test_grafana_dashboard() -> None:
    dash = json.loads((PROD / "grafana" / "dashboards" / "citystream-operations.json").read_text())
    assert dash["title"] == "citystream operations"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    datasources = (PROD / "grafana/provisioning/datasources/datasources.yml").read_text()
    used: set[str] = set()
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert f"uid: {panel['datasource']['uid']}" in datasources
        for target in panel["targets"]:
            used |= set(re.findall(r"citystream_\w+", target["expr"]))
    assert used <= METRICS, used - METRICS
    assert {"citystream_events_in_total", "citystream_consumer_lag"} <= used


def test_compose_has_no_default_secrets() -> None:
    text = (PROD / "docker-compose.yml").read_text()
    assert "\t" not in text
    for service in ("kafka", "clickhouse", "triton", "worker", "prometheus", "grafana"):
        assert re.search(rf"^  {service}:$", text, re.M), service
    # Every image pinned to an explicit tag.
    for image in re.findall(r"^\s+image:\s*(\S+)", text, re.M):
        assert ":" in image and not image.endswith(":latest"), image
    # Secrets only as ${VAR:?...}: compose refuses to start without them.
    for var in re.findall(r"\$\{(\w*PASSWORD\w*)([^}]*)\}", text):
        assert var[1].startswith(":?"), var
    assert "CITYSTREAM_CLICKHOUSE_URL: clickhouse://citystream@clickhouse:9000" in text


def test_clickhouse_users() -> None:
    root = ET.parse(PROD / "clickhouse" / "users.d" / "citystream.xml").getroot()
    users = root.find("users")
    assert users is not None
    for name in ("citystream", "analyst"):
        user = users.find(name)
        assert user is not None, name
        assert user.find("password") is None, "no plaintext passwords"
        digest = user.findtext("password_sha256_hex") or ""
        # A placeholder that is not hex makes the server refuse to start: fail closed.
        assert not re.fullmatch(r"[0-9a-f]{64}", digest), f"{name}: real hash committed"
    profile = root.find("profiles/citystream_analyst")
    assert profile is not None and profile.findtext("readonly") in {"1", "2"}
    ET.parse(PROD / "clickhouse" / "config.d" / "citystream.xml")
