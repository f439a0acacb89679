"""The data folder is private (0700, files 0600), and /metrics wants its token."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SETTINGS
from tests.live import TIMEOUT, GraphQLClient, LiveServer, unique

CREATE = 'mutation($id: ID!) { createRoom(input: {id: $id, name: "Room"}) { id } }'
SEND = "mutation($r: ID!) { sendMessage(input: {roomId: $r, data: {t: 1}}) { cursor } }"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def written_files(data_dir: Path) -> dict[str, int]:
    """What the server wrote in its folder (the tests' own config and logs aside)."""
    return {
        p.name: mode(p)
        for p in data_dir.iterdir()
        if p.is_file() and p.name != "config.yaml" and not p.name.startswith("server-")
    }


@pytest.fixture
def loose_umask() -> object:
    # The usual umask (022) is what made the folder 0755 and the database 0644.
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_a_new_data_folder_and_its_files_are_private(
    make_server: type[LiveServer], tmp_path: Path, loose_umask: object
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    # LiveServer writes its config into the folder: let the server create a
    # sub-folder of it for the database, as it creates the data folder.
    db_dir = data_dir / "db"
    server = make_server(
        data_dir, {**TEST_SETTINGS, "backend_urls": [f"sqlite:///{db_dir / 'forge.db'}"]}
    )
    data_dir.mkdir(parents=True)
    os.chmod(data_dir, 0o755)
    server.start()
    alice = server.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    await alice.execute(SEND, r=room)

    assert mode(data_dir) == 0o700  # tightened at start
    assert mode(db_dir) == 0o700  # created private
    files = written_files(data_dir) | written_files(db_dir)
    assert {"jwt-secret", "metrics-token", "forge.db", "forge.db-wal", "forge.db-shm"} <= set(files)
    assert files == dict.fromkeys(files, 0o600)


async def test_an_old_loose_database_is_tightened_at_start(
    make_server: type[LiveServer], tmp_path: Path, loose_umask: object
) -> None:
    data_dir = tmp_path / "old"
    first = make_server(data_dir, dict(TEST_SETTINGS)).start()
    alice = first.client(unique("alice"))
    room = unique("room")
    await alice.execute(CREATE, id=room)
    first.stop()
    # As an older version (or a careless copy) left them.
    os.chmod(data_dir, 0o755)
    for path in data_dir.iterdir():
        if path.name.startswith("forge-streaming.db"):
            os.chmod(path, 0o644)

    second = make_server(data_dir, dict(TEST_SETTINGS)).start()
    assert mode(data_dir) == 0o700
    files = written_files(data_dir)
    assert "forge-streaming.db" in files
    assert files == dict.fromkeys(files, 0o600)
    # Nothing was lost by it.
    rooms = await GraphQLClient(second, alice.token).execute("{ rooms(mine: true) { id } }")
    assert [r["id"] for r in rooms["rooms"]] == [room]


async def test_metrics_need_the_generated_token(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        user = await http.get(
            "/metrics", headers={"Authorization": f"Bearer {server.token(unique('u'))}"}
        )
        right = await http.get(
            "/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"}
        )
    for refused in (anonymous, wrong, user):
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "streaming_" not in refused.text
    assert right.status_code == 200
    assert "streaming_connections_active" in right.text
    token_file = server.data_dir / "metrics-token"
    assert mode(token_file) == 0o600
    assert server.metrics_token == token_file.read_text().strip()


async def test_metrics_token_setting(make_server: type[LiveServer], tmp_path: Path) -> None:
    token = "a-prometheus-scrape-token"
    server = make_server(tmp_path / "set", {**TEST_SETTINGS, "metrics_token": token}).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        anonymous = await http.get("/metrics")
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401
    assert scraped.status_code == 200
    assert not (server.data_dir / "metrics-token").exists()


async def test_a_short_metrics_token_is_refused(
    make_server: type[LiveServer], tmp_path: Path
) -> None:
    server = make_server(tmp_path / "short", {**TEST_SETTINGS, "metrics_token": "short"})
    with pytest.raises(RuntimeError, match="metrics_token"):
        server.start()
