"""The production Grafana's city dashboard is the city page's own queries (generated)."""

import json
import re

from infra.grafana_city import (
    _SINCE,
    _UNTIL,
    DASHBOARD,
    FROM_MACRO,
    TO_MACRO,
    grafana_sql,
    render_dashboard,
)
from schemas.dashboard import PANELS, sql_datetime
from streams.settings import REPO_ROOT


def test_committed_dashboard_is_what_the_generator_writes():
    committed = json.loads(DASHBOARD.read_text())
    assert committed == render_dashboard(), "run: python -m infra.grafana_city"


def test_every_panel_reads_grafanas_time_range_and_nothing_else():
    datasources = (REPO_ROOT / "infra/production/grafana/provisioning/datasources"
                   / "datasources.yml").read_text()
    doc = render_dashboard()
    assert [p["id"] for p in doc["panels"]] == list(range(1, len(PANELS) + 1))
    for panel, spec in zip(doc["panels"], PANELS, strict=True):
        assert f"uid: {panel['datasource']['uid']}" in datasources
        sql = panel["targets"][0]["rawSql"]
        assert FROM_MACRO in sql and TO_MACRO in sql
        assert not re.search(r"toDateTime\('\d{4}-", sql), sql  # no fixed dates left
        back = sql.replace(FROM_MACRO, sql_datetime(_SINCE)).replace(TO_MACRO,
                                                                      sql_datetime(_UNTIL))
        assert back == spec.sql(_SINCE, _UNTIL)  # the tested query, only the bounds differ
        assert grafana_sql(spec) == sql
