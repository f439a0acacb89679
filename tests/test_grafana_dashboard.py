"""deploy/grafana/forge-streaming.json: valid JSON, a Grafana dashboard,
and every metric its PromQL names is one a running server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.live import LiveServer, unique

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "forge-streaming.json"
METRIC = re.compile(r"\bstreaming_[a-z0-9_]+\b")


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        found += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    return found


async def exported(server: LiveServer) -> set[str]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(
            "/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"}
        )
    response.raise_for_status()
    return {
        sample.name
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_dashboard_names_only_metrics_the_server_exports(server: LiveServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "forge-streaming"
    exprs = expressions(dashboard)
    assert len(exprs) >= 10
    # Every expression reads our metrics, so the check below sees all it reads.
    assert all(METRIC.search(e) for e in exprs), [e for e in exprs if not METRIC.search(e)]
    named = {name for e in exprs for name in METRIC.findall(e)}

    # One error in a result, so the labelled error counter has a sample.
    client = server.client(unique("viewer"))
    await client.error("{ noSuchField }")
    names = await exported(server)
    assert named - names == set()
    assert {"streaming_connections_active", "streaming_graphql_errors_total"} <= named


async def test_errors_sent_to_clients_are_counted_by_code(server: LiveServer) -> None:
    client = server.client(unique("viewer"))

    def count(code: str) -> float:
        try:
            return server.metric(f'streaming_graphql_errors_total{{code="{code}"}}')
        except KeyError:
            return 0.0

    before = count("FORBIDDEN"), count("GRAPHQL_VALIDATION_FAILED")
    refused = await client.error(
        'mutation { broadcastSystemMessage(roomId: "lobby", data: {text: "hi"}) { id } }'
    )
    assert refused.code == "FORBIDDEN"
    await client.error("{ noSuchField }")
    assert count("FORBIDDEN") == before[0] + 1
    assert count("GRAPHQL_VALIDATION_FAILED") == before[1] + 1
