"""Static checks of infra/production: promtool on the Prometheus files, structure elsewhere.

No Docker here, so the compose file gets a textual check rather than `docker compose config`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

PROD = Path(__file__).resolve().parents[2] / "infra" / "production"
def _our_metrics() -> set[str]:
    """Every series name the worker exposes (from its real registry, not a list kept here)."""
    from processors.metrics import IngestMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in IngestMetrics().registry.collect():
        # Labelled families have no samples until a label is used: name them by type.
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


METRICS = _our_metrics()


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
    assert '"vision:6068"' in text


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
    assert {
        "citystream_events_in_total",
        "citystream_consumer_lag",
        "citystream_dispatch_decisions_total",
        "citystream_dispatch_latency_seconds_bucket",
        "citystream_inference_fallbacks_total",
    } <= used


def test_alert_rules_use_real_metrics() -> None:
    used = set(re.findall(r"citystream_\w+", (PROD / "alerts.yml").read_text()))
    assert used <= METRICS, used - METRICS


def test_dashboard_triton_panels_use_real_triton_metrics(dispatch_triton: Any) -> None:
    """The Triton panels' series exist on a real tritonserver (GPU series only on GPU hosts)."""
    dash = json.loads((PROD / "grafana" / "dashboards" / "citystream-operations.json").read_text())
    wanted = {
        name
        for panel in dash["panels"]
        for target in panel["targets"]
        for name in re.findall(r"nv_\w+", target["expr"])
        if not name.startswith("nv_gpu_")
    }
    assert wanted, "the dashboard has no Triton panel"
    with urllib.request.urlopen(dispatch_triton.metrics_url, timeout=10) as resp:
        exposed = {
            line.split("{")[0].split(" ")[0]
            for line in resp.read().decode().splitlines()
            if line and not line.startswith("#")
        }
    assert wanted <= exposed, wanted - exposed


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
    assert profile.findtext("max_execution_time") and profile.findtext("max_result_rows")
    # The analyst has a quota of its own, and it exists.
    analyst_quota = users.findtext("analyst/quota")
    quota = root.find(f"quotas/{analyst_quota}/interval")
    assert analyst_quota != "default" and quota is not None
    assert int(quota.findtext("duration") or 0) > 0 and int(quota.findtext("queries") or 0) > 0
    ET.parse(PROD / "clickhouse" / "config.d" / "citystream.xml")
