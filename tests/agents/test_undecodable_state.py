"""A state that does not decode (on the state topic, written by something other than a learner) stops nothing:
the learner learns on from the key's last good state (else the prior) and notes it for a dead letter; the state
reader keeps the last good state, counts the record and reads on; local mode decides with the prior."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from banditroute.agents.learn import LearnLogic
from banditroute.client import build_request
from banditroute.config import Registry, RouterConfig
from banditroute.core import TaskState, encode_state
from banditroute.events import RoutingDecision
from banditroute.kafka.state_reader import StateReader
from banditroute.local_router import LocalRouter
from banditroute.routing import StateView
from banditroute.settings import Settings
from tests.agents.test_routing import VERSION_B, write
from tests.client.test_decision_publisher import BatchProducer

BAD = b"BR\x07" + b"not a state" * 10


def outcome(off: int, model: str = "b2") -> dict[str, Any]:
    return {"task_key": "chat", "model": model, "quality": 1.0, "cost_usd": 0.001, "src": 0, "off": off}


def learnt(registry: Registry, n: int) -> TaskState:
    table: dict[str, bytes] = {}
    LearnLogic(table, registry).apply([outcome(i) for i in range(n)], 1.7e9)
    return LearnLogic(table, registry).state("chat")


def test_the_learner_learns_on_from_the_last_good_state(tmp_path: Path) -> None:
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    good = learnt(registry, 3)
    table = {"chat": BAD}
    learn = LearnLogic(table, registry, last_good={"chat": good}.get)
    assert not learn.decodes("chat")
    stats = learn.apply([outcome(2), outcome(3)], 1.7e9)  # offset 2 was learnt into the good state
    assert (stats.learned, stats.skipped_redelivered) == (1, 1)
    assert LearnLogic(table, registry).state("chat").events == good.events + 1
    [bad] = learn.undecodable
    assert (bad.key, bad.raw, bad.last_good) == ("chat", BAD, True)
    assert "not a banditroute state blob" in bad.error


def test_without_a_good_state_the_learner_starts_from_the_prior_and_notes_it_once(tmp_path: Path) -> None:
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    table = {"chat": BAD}
    learn = LearnLogic(table, registry)
    stats = learn.apply([outcome(7)], 1.7e9)
    assert stats.learned == 1 and learn.state("chat").events == 1
    table["chat"] = BAD  # read again (a rebalance): noted again, as that record is read again
    learn.forget_cache()
    learn.apply([outcome(7)], 1.7e9)
    assert [(u.key, u.last_good) for u in learn.undecodable] == [("chat", False), ("chat", False)]


def record(topic: str, key: str, value: bytes | None, offset: int) -> Any:
    return SimpleNamespace(topic=topic, key=orjson.dumps(key), value=value, partition=0, offset=offset)


def reader(registry: Registry, view: StateView, **kwargs: Any) -> StateReader:
    return StateReader(
        view,
        registry,
        bootstrap="unused:1",
        state_topic="p.state",
        catalog_topic="p.catalog",
        security={},
        **kwargs,
    )


def test_the_state_reader_keeps_the_last_good_state_and_counts_bad_records(tmp_path: Path) -> None:
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    good = learnt(registry, 2)
    view = StateView()
    states = reader(registry, view)
    states._apply(record("p.state", "chat", encode_state(good), 4))
    states._apply(record("p.state", "chat", BAD, 5))
    states._apply(record("p.catalog", "m", b"{}", 0))
    states._apply(record("p.catalog", "m", None, 1))  # a tombstone is not a bad record
    assert view.get("chat") is not None and view.get("chat").events == 2  # type: ignore[union-attr]
    assert view.where["chat"] == (0, 4) and states.undecodable == {"chat": (0, 5)}
    assert states.counters == {"bad_state_records": 1, "bad_catalog_records": 1}
    states._apply(record("p.state", "chat", encode_state(learnt(registry, 3)), 6))
    assert states.undecodable == {} and view.get("chat").events == 3  # type: ignore[union-attr]


async def test_reading_back_an_undecodable_state_decides_with_the_prior(tmp_path: Path) -> None:
    """Local mode remembers only where a state it does not hold is; when that record does not decode, route()
    decides with the prior instead of raising, and does not read it back again."""
    config = RouterConfig.load(write(tmp_path / "b", VERSION_B))
    local = LocalRouter(Settings.model_validate({}), BatchProducer(), client_id="c", seed=1, config=config)
    local.reader.caught_up.set()
    local.reader.polled_at = time.monotonic() + 3600.0
    fetched: list[str] = []

    async def fetch(key: str) -> bytes:
        fetched.append(key)
        return BAD

    local.reader.fetch = fetch  # type: ignore[method-assign]  # the record the topic would give back
    await local.publisher.start([local.decisions_topic, local.shadow_topic])
    try:
        local.view.remember("summarise", (0, 9))
        for i in range(2):
            decided = await local.route(build_request("summarise", request_id=f"r{i}"))
            assert isinstance(decided, RoutingDecision) and decided.state_version == 0
    finally:
        await local.stop(2.0)
    assert fetched == ["summarise"] and "summarise" not in local.view.evicted
    assert local.reader.counters["bad_state_records"] == 1


async def test_a_key_evicted_from_the_view_learns_on_from_its_last_good_state(tmp_path: Path) -> None:
    """The view evicted an idle key's good state (it remembers its place); a rebalance recovers a record that
    does not decode into the learner's table before the idle sweep drops it again. The learner must learn on
    from that good state (read back from its place), not from the prior (before: every outcome it ever learnt
    for the key was lost, and the dead letter said no good state had been read)."""
    from banditroute.app import Router
    from tests.kafka.router_world import write_config

    config_dir = write_config(tmp_path / "config")
    router = Router(Settings().model_copy(update={"config_dir": config_dir, "data_dir": tmp_path / "data"}))
    table: dict[str, bytes] = {}
    learn = LearnLogic(table, router.registry)
    learn.apply([{**outcome(i), "model": "budget"} for i in range(3)], 1.7e9)
    good = learn.state("chat")
    router.view.offer("chat", good, (0, 4))
    assert router.view.evict("chat")
    router.task_to_state.data["chat"] = BAD  # recovered from the state topic after a rebalance
    fetched: list[str] = []

    async def fetch(key: str) -> bytes:
        fetched.append(key)
        return table["chat"]  # the record at the place the view remembered

    async def read_through(partition: int) -> None:
        """The reader has read the partition (on the real broker: tests/kafka/test_state_read_wait.py)."""

    router.reader.fetch = fetch  # type: ignore[method-assign]
    router.reader.read_through = read_through  # type: ignore[method-assign]
    keys = {"chat"}
    await router._read_state_before_replacing(keys)  # as Router._learn_records, before apply
    await router._restore_evicted(keys)
    router.learn.apply([{**outcome(3), "model": "budget"}], 1.7e9)
    [bad] = router.learn.undecodable
    assert bad.last_good and fetched == ["chat"]
    assert router.learn.state("chat").events == good.events + 1


def test_the_state_reader_reads_keys_as_the_learners_table_does(tmp_path: Path) -> None:
    """A record whose key is JSON but not a string (``123``, ``{"a": 1}``) is held by the learner's table under a
    key no task type has (kafka/state_keys.py); the state reader must not read it as the state of task type
    "123" (before: every worker and local-mode client decided task type 123 with it, a state no learner learns
    on, held until a learnt one's version passed it). Counted as a bad state record; the good one stays."""
    from banditroute.kafka.state_keys import UNREADABLE, StateKeyCodec

    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    view = StateView()
    states = reader(registry, view)
    good = encode_state(learnt(registry, 2))
    states._apply(record("p.state", "123", good, 4))
    forged = encode_state(learnt(registry, 5))
    for offset, key in enumerate((b"123", b'{"a": 1}', b"\xff"), start=5):
        states._apply(SimpleNamespace(topic="p.state", key=key, value=forged, partition=0, offset=offset))
        assert StateKeyCodec()._loads(key).startswith(UNREADABLE)  # as the learner's table holds it
    assert view.keys() == ["123"] and view.get("123").events == 2  # type: ignore[union-attr]
    assert states.counters == {"bad_state_records": 3}


def test_a_local_mode_reader_remembers_the_last_good_place_of_a_key_it_does_not_hold(tmp_path: Path) -> None:
    """Local mode keeps only the place of a task type it does not route; a bad record after the good one must
    not take that place (before: it did, and a later read back found only the bad record: the prior)."""
    registry = Registry(RouterConfig.load(write(tmp_path / "b", VERSION_B)))
    view = StateView()
    states = reader(registry, view, keep=lambda key: key != "chat")
    states._apply(record("p.state", "chat", encode_state(learnt(registry, 2)), 4))
    states._apply(record("p.state", "chat", BAD, 5))
    assert view.get("chat") is None and view.evicted == {"chat": (0, 4)}
    assert states.counters == {"bad_state_records": 1} and states.undecodable == {"chat": (0, 5)}
