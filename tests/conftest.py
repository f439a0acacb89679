from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.live import LiveServer

if TYPE_CHECKING:
    from tests.services import ServiceProcess

# Small limits and short timers so tests can reach them quickly.
TEST_SETTINGS = {
    "backend": "sqlite",
    "max_connections_per_user": 3,
    "max_rooms_per_user": 10,
    "max_channels_per_user": 5,
    "max_message_size": 4096,
    "max_messages_per_second": 20,
    "typing_timeout": "600ms",
    "presence_ttl": "2s",
    "presence_grace": "300ms",
    "ping_interval": "5s",
    "init_timeout": "3s",
}


# The two ways the server may use its libraries (settings `fast_paths`): through
# the adapters to their internals, or by their public API only. Every test runs
# on the first; a module marked `both_paths` (the protocol conformance suites)
# runs its servers' tests on the second too, except a test marked
# `fast_paths_only(why)`.
LIBRARY_PATHS = {"fast": {}, "public": {"fast_paths": False}}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_paths: run this module's server tests with fast_paths on and off"
    )
    config.addinivalue_line(
        "markers", "fast_paths_only(why): needs a library fast path; says which and why"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "library_paths" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("both_paths") is None:
        return
    only_fast = metafunc.definition.get_closest_marker("fast_paths_only")
    if only_fast is not None and not only_fast.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: fast_paths_only needs a why")
    paths = ["fast"] if only_fast is not None else list(LIBRARY_PATHS)
    metafunc.parametrize("library_paths", paths, indirect=True, scope="module")


@pytest.fixture(scope="module")
def library_paths(request: pytest.FixtureRequest) -> str:
    """ "fast" or "public": which paths this module's servers take."""
    paths: str = getattr(request, "param", "fast")
    return paths


# Bytes of each server log (by path) already checked for tracebacks.
_CHECKED = pytest.StashKey[dict[Path, int]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test fails when a server it used logged a traceback during it.

    Every server a test holds as a fixture value is checked, from where the
    last test's check ended (so its start-up counts too) to after the
    test's teardown (so closing its clients counts too). Servers a test
    starts itself through `make_server` are checked when they stop.
    """
    result = yield
    checked = item.session.stash.setdefault(_CHECKED, {})
    for live in _live_servers(item):
        if live.log_path is None:
            continue
        since = checked.get(live.log_path, 0)
        checked[live.log_path] = live.log_size()
        live.assert_no_traceback(since)
    return result


def _live_servers(item: pytest.Item) -> list[LiveServer]:
    values = (getattr(item, "funcargs", None) or {}).values()
    found: dict[int, LiveServer] = {}
    for value in values:
        if isinstance(value, LiveServer):
            found[id(value)] = value
    return list(found.values())


@pytest.fixture(scope="module")
def module_server(
    tmp_path_factory: pytest.TempPathFactory, library_paths: str
) -> Iterator[LiveServer]:
    settings = {**TEST_SETTINGS, **LIBRARY_PATHS[library_paths]}
    live = LiveServer(tmp_path_factory.mktemp("server"), settings).start()
    yield live
    live.stop()


@pytest.fixture
def server(module_server: LiveServer) -> Iterator[LiveServer]:
    """The module's server (embedded default, sqlite), shared by its tests.

    After each test it must drop back to no live subscriptions: that keeps
    `wait_subscribers(n)` exact for the next test and catches leaks.
    """
    yield module_server
    module_server.wait_idle()


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FORGE_STREAMING_* variable of this shell, and no config file of
    the working directory, reaches the settings a test loads."""
    for var in list(os.environ):
        if var.upper().startswith("FORGE_STREAMING_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_server(tmp_path: Path, library_paths: str) -> Iterator[type[LiveServer]]:
    """Start servers with settings of the test's own (on the module's library
    paths unless they say); all stopped at the end."""
    started: list[LiveServer] = []
    paths = LIBRARY_PATHS[library_paths]

    class _Started(LiveServer):
        def start(self) -> LiveServer:
            self.settings = {**paths, **self.settings}
            started.append(self)
            return super().start()

    yield _Started
    for live in started:
        live.stop()
    # A server started twice (a restart) appends to one log: check it once.
    for live in {id(live): live for live in started}.values():
        live.assert_no_traceback()


@pytest.fixture(params=["redis", "nats"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A private Redis or NATS server for a cluster test (each such test runs on both)."""
    from tests.services import ServiceProcess  # services imports this module

    svc = ServiceProcess(request.param, tmp_path / request.param).start()
    yield svc
    svc.stop()


def cluster_nodes(
    make_server: type[LiveServer], tmp_path: Path, settings: list[dict[str, Any]]
) -> Iterator[list[LiveServer]]:
    """For a `nodes` fixture (`yield from`): one started node per settings; at
    the end each node still running must have gone idle (no leaked subscribers)."""
    started = [make_server(tmp_path / f"node{i}", s).start() for i, s in enumerate(settings)]
    yield started
    for node in started:
        if node.process is not None:
            node.wait_idle()


def service_available(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def missing(reason: str) -> NoReturn:
    """Skip for something the machine lacks, except under CI=true, where
    everything the suite uses must be there: then fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def require_service(name: str, port: int) -> None:
    if not service_available(port):
        missing(f"{name} is not running on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def postgres_cluster() -> str:
    """The base URL of the session's private PostgreSQL cluster."""
    from tests.services import PRIVATE_POSTGRES

    return PRIVATE_POSTGRES.url()


@pytest.fixture(scope="session", autouse=True)
def _stop_private_postgres() -> Iterator[None]:
    """Stop the private PostgreSQL cluster at the end, if a test started it."""
    yield
    from tests.services import PRIVATE_POSTGRES

    PRIVATE_POSTGRES.stop()
