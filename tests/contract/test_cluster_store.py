"""ClusterStore contract: node reports that expire, token revocations seen
by every node (two stores opened on one data set are two nodes)."""

from __future__ import annotations

from .conftest import ClusterStoreMaker, eventually


async def test_reports_of_every_node_in_id_order(make_cluster_store: ClusterStoreMaker) -> None:
    one, two = await make_cluster_store(), await make_cluster_store()
    assert await one.nodes() == []
    await two.report("n2", {"id": "n2", "connections": 3}, ttl=30)
    await one.report("n1", {"id": "n1", "connections": 1, "nested": {"a": [1.5]}}, ttl=30)
    expected = [
        {"id": "n1", "connections": 1, "nested": {"a": [1.5]}},
        {"id": "n2", "connections": 3},
    ]
    assert await one.nodes() == expected
    assert await two.nodes() == expected
    # A new report replaces the node's last one.
    await one.report("n1", {"id": "n1", "connections": 7}, ttl=30)
    assert [n["connections"] for n in await two.nodes()] == [7, 3]


async def test_a_report_not_renewed_expires(make_cluster_store: ClusterStoreMaker) -> None:
    one, two = await make_cluster_store(), await make_cluster_store()
    await one.report("lasting", {"id": "lasting"}, ttl=30)
    await two.report("killed", {"id": "killed"}, ttl=0.3)
    assert [n["id"] for n in await one.nodes()] == ["killed", "lasting"]

    async def dropped() -> bool:
        return [n["id"] for n in await one.nodes()] == ["lasting"]

    await eventually(dropped, within=5)
    # Reporting again brings it back.
    await two.report("killed", {"id": "killed"}, ttl=30)
    assert [n["id"] for n in await one.nodes()] == ["killed", "lasting"]


async def test_revocations_move_forward_only_and_reach_every_node(
    make_cluster_store: ClusterStoreMaker,
) -> None:
    one, two = await make_cluster_store(), await make_cluster_store()
    assert await two.tokens_revoked_before("alice") is None
    await one.revoke_tokens("alice", 1_700_000_000.25)
    assert await two.tokens_revoked_before("alice") == 1_700_000_000.25
    await two.revoke_tokens("alice", 1_600_000_000.0)  # older: no effect
    assert await one.tokens_revoked_before("alice") == 1_700_000_000.25
    await two.revoke_tokens("alice", 1_800_000_000.5)
    assert await one.tokens_revoked_before("alice") == 1_800_000_000.5
    assert await one.tokens_revoked_before("bob") is None
