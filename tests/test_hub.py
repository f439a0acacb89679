"""The fan-out hub, including regression tests for broadcaster's defects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from broadcaster import Event

from backends.hub import RESYNC, Hub, HubClosed, SlowConsumer
from backends.memory_broker import MemoryBroker
from tests.hub_checks import concurrent_first_subscribers_all_receive, receive


def text_hub(backend: MemoryBroker | None = None, capacity: int = 16) -> Hub[str]:
    return Hub(
        backend or MemoryBroker(),
        encode=lambda s: s,
        decode=lambda s: s,
        capacity=capacity,
        retry_delay=0.01,
    )


@pytest.fixture
async def hub() -> AsyncIterator[Hub[str]]:
    h = text_hub()
    await h.start()
    yield h
    await h.stop()


async def test_first_subscriber_receives_the_first_publish(hub: Hub[str]) -> None:
    # broadcaster + redis-py 8 lost the first message on a new subscription.
    async with hub.subscribe("t") as sub:
        await hub.publish("t", "one")
        assert await receive(sub) == "one"


async def test_concurrent_first_subscribers_all_receive(hub: Hub[str]) -> None:
    await concurrent_first_subscribers_all_receive(hub)


async def test_one_upstream_subscription_per_topic() -> None:
    calls: list[str] = []

    class CountingBackend(MemoryBroker):
        async def subscribe(self, channel: str) -> None:
            calls.append(channel)
            await super().subscribe(channel)

        async def unsubscribe(self, channel: str) -> None:
            calls.append("-" + channel)
            await super().unsubscribe(channel)

    hub = text_hub(CountingBackend())
    await hub.start()
    try:
        async with hub.subscribe("a"), hub.subscribe("a"), hub.subscribe("a"):
            assert hub.subscriber_count("a") == 3
        async with hub.subscribe("a"):
            pass
    finally:
        await hub.stop()
    assert calls == ["a", "-a", "a", "-a"]


async def test_slow_consumer_is_cut_off_without_stalling_others() -> None:
    hub = text_hub(capacity=3)
    await hub.start()
    try:
        async with hub.subscribe("t") as slow, hub.subscribe("t") as fast:
            received: list[object] = []
            for i in range(10):
                await hub.publish("t", str(i))
                received.append(await receive(fast))
            assert received == [str(i) for i in range(10)]
            with pytest.raises(SlowConsumer):
                while True:
                    await receive(slow)
            assert slow.pending() == 0  # its buffer was freed when it was cut off
    finally:
        await hub.stop()


async def test_listener_failure_resyncs_subscribers() -> None:
    # A fault a real backend shows after an outage; the memory backend cannot
    # fail, so this one is injected.
    class FailingOnce(MemoryBroker):
        failed = False

        async def next_published(self) -> Event:
            if not self.failed:
                self.failed = True
                raise ConnectionError("backend went away")
            return await super().next_published()

    hub = text_hub(FailingOnce())
    async with hub.subscribe("t") as sub:
        await hub.start()
        try:
            await hub.publish("t", "after")
            assert await receive(sub) is RESYNC
            assert await receive(sub) == "after"
        finally:
            await hub.stop()


async def test_stop_ends_subscriptions(hub: Hub[str]) -> None:
    async with hub.subscribe("t") as sub:
        await hub.stop()
        with pytest.raises(HubClosed):
            await receive(sub)
        await hub.start()  # the fixture stops it again


async def test_undecodable_events_are_dropped() -> None:
    def strict(raw: str) -> str:
        if raw == "bad":
            raise ValueError("bad event")
        return raw

    hub: Hub[str] = Hub(MemoryBroker(), encode=lambda s: s, decode=strict)
    await hub.start()
    try:
        async with hub.subscribe("t") as sub:
            await hub.publish("t", "bad")
            await hub.publish("t", "good")
            assert await receive(sub) == "good"
    finally:
        await hub.stop()
