"""The LiteLLM plugin against the real broker and a worker, with LiteLLM's own mock_response (no network):
routing follows what the worker learnt, one feedback per call (errors and fallbacks too), the served model is
credited and the worker joins every feedback."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch its price map at import

from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import Router

from banditroute.integrations.litellm import TASK_TYPE_KEY, BanditRouting, request_id_of
from tests.integrations.worker import Worker, topic_records, wait_ready
from tests.kafka.helpers import wait_for

pytestmark = pytest.mark.kafka

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "litellm_router.py"


def deployment(name: str, group: str, answer: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": f"openai/{name}", "api_key": "sk-test", "mock_response": answer},
        "model_info": {"id": name},
    }


def score(response: Any) -> float:
    return 1.0 if response.choices[0].message.content == "right" else 0.0


async def test_routing_follows_what_the_worker_learnt(worker: Worker) -> None:
    router = Router(
        model_list=[deployment("strong", "auto", "right"), deployment("weak", "auto", "wrong")], num_retries=0
    )
    async with worker.client() as client:
        await wait_ready(client)
        routing = BanditRouting(client, task_type="qa", score=score).attach(router)
        try:
            served = []
            for _ in range(12):  # rounds of 10 concurrent calls; the worker learns between them
                responses = await asyncio.gather(
                    *(
                        router.acompletion(model="auto", messages=[{"role": "user", "content": "2+2?"}])
                        for _ in range(10)
                    )
                )
                served += [r._hidden_params["model_id"] for r in responses]
                assert all(request_id_of(r) is not None for r in responses)
        finally:
            await routing.aclose()
    early, late = served[:20], served[-40:]
    assert late.count("strong") >= 36, f"last 40 calls: {late.count('strong')} to strong (first 20: {early})"
    assert routing.stats["feedback"] == 120 and routing.stats["feedback_failed"] == 0


async def test_one_feedback_per_call_with_errors_and_fallbacks(worker: Worker) -> None:
    """``flaky`` always fails. Group ``auto`` falls back to ``spare``, where the plugin serves the next model of
    the decision: calls routed to flaky are credited to strong. Group ``doomed`` (flaky only) fails, falls back
    to a group outside the decision that fails too, or is rescued by one: an error for flaky each time."""
    router = Router(
        model_list=[
            deployment("flaky", "auto", "litellm.RateLimitError"),
            deployment("strong", "auto", "right"),
            deployment("weak", "spare", "wrong"),  # the spare group only exists to be a fallback hop
        ],
        fallbacks=[{"auto": ["spare"]}],
        num_retries=0,
    )
    doomed = Router(  # "broken" and "rescue" are outside banditroute: reached only by a request's fallbacks
        model_list=[
            deployment("flaky", "doomed", "litellm.RateLimitError"),
            deployment("outside-1", "broken", "litellm.InternalServerError"),
            deployment("outside-2", "rescue", "right"),
        ],
        num_retries=0,
    )
    async with worker.client() as client:
        await wait_ready(client)
        routing = BanditRouting(client, score=score, groups={"spare": ["flaky", "strong", "weak"]}).attach(
            router
        )
        stranded = BanditRouting(client, task_type="fb-doomed").attach(doomed)
        try:
            served: dict[str, str] = {}
            for i in range(24):
                response = await router.acompletion(
                    model="auto",
                    messages=[{"role": "user", "content": f"q{i}"}],
                    metadata={TASK_TYPE_KEY: "fb"},
                )
                rid = request_id_of(response)
                assert rid is not None
                served[rid] = response._hidden_params["model_id"]
            failed = 0
            # four failures of flaky in a row at most: a fifth would open its circuit (task type fb-doomed)
            for i, fallbacks in enumerate([[], ["broken"]]):
                with pytest.raises(litellm.RateLimitError):
                    await doomed.acompletion(
                        model="doomed", messages=[{"role": "user", "content": f"x{i}"}], fallbacks=fallbacks
                    )
                failed += 1
            for i in range(2):  # rescued by a model banditroute did not choose: the decided one failed
                response = await doomed.acompletion(
                    model="doomed", messages=[{"role": "user", "content": f"y{i}"}], fallbacks=["rescue"]
                )
                assert response._hidden_params["model_id"] == "outside-2"
                failed += 1
        finally:
            await routing.aclose()
            await stranded.aclose()
    decisions = {
        d["request_id"]: d
        for d in await topic_records(worker, "decisions")
        if d["task_type"] in ("fb", "fb-doomed")
    }
    feedback = [f for f in await topic_records(worker, "feedback") if f["request_id"] in decisions]
    by_request: dict[str, list[dict[str, Any]]] = {}
    for f in feedback:
        by_request.setdefault(f["request_id"], []).append(f)
    assert all(len(v) == 1 for v in by_request.values()), "a call got more than one feedback"
    ok = {rid: fs[0] for rid, fs in by_request.items() if rid in served}
    errors = [fs[0] for rid, fs in by_request.items() if rid not in served]
    assert len(ok) == 24 and len(errors) == failed == 4
    assert all(f["model"] == served[rid] == "strong" and f["quality"] == 1.0 for rid, f in ok.items())
    rescued_calls = [rid for rid in ok if decisions[rid]["model"] == "flaky"]
    assert rescued_calls, "no call was routed to flaky first (the fallback path went untested)"
    assert all(f["model"] == "flaky" and f["error"] == "rate_limited" for f in errors)
    dead = [d for d in await topic_records(worker, "deadletter") if d["source_topic"].endswith(".feedback")]
    assert dead == [], [(d["reason"], d["error"]) for d in dead]


async def test_quality_sent_later_and_task_type_from_messages(worker: Worker) -> None:
    """Without a score hook the plugin sends nothing for a success; the caller's later quality is the one
    feedback, for the model that served. The task type comes from a function of the messages."""
    router = Router(model_list=[deployment("strong", "auto", "right"), deployment("weak", "auto", "wrong")])
    async with worker.client() as client:
        await wait_ready(client)
        routing = BanditRouting(client, task_type=lambda messages: f"later-{len(messages)}").attach(router)
        try:
            responses = [
                await router.acompletion(model="auto", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(3)
            ]
            # LiteLLM runs its success callbacks in the background, after the call returned
            assert await wait_for(lambda: routing.stats["awaiting_quality"] == 3, timeout_s=10)
            assert routing.stats["feedback"] == 0
            for response in responses:
                assert await routing.feedback(response, quality=0.5)
        finally:
            await routing.aclose()
    ids = {request_id_of(r): r._hidden_params["model_id"] for r in responses}
    decisions = [d for d in await topic_records(worker, "decisions") if d["request_id"] in ids]
    assert sorted(d["task_type"] for d in decisions) == ["later-1"] * 3
    feedback = [f for f in await topic_records(worker, "feedback") if f["request_id"] in ids]
    assert sorted(f["request_id"] for f in feedback) == sorted(ids)
    assert all(f["model"] == ids[f["request_id"]] and f["quality"] == 0.5 for f in feedback)
    assert all(f["tokens_in"] is not None and f["tokens_out"] is not None for f in feedback)


async def test_aclose_waits_for_the_success_event_of_an_answered_call(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM logs success in a task of its own; on a busy machine it ran after ``aclose`` had returned and the
    client had closed, and the feedback was lost (ProducerClosed). Here the success event is held back on
    purpose: ``aclose`` must still send its feedback before it returns."""
    router = Router(model_list=[deployment("strong", "auto", "right")], num_retries=0)
    async with worker.client() as client:
        await wait_ready(client)
        routing = BanditRouting(client, task_type="close", score=score).attach(router)
        logged = routing.async_log_success_event

        async def late(*args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(0.5)
            await logged(*args, **kwargs)

        monkeypatch.setattr(routing, "async_log_success_event", late)
        response = await router.acompletion(model="auto", messages=[{"role": "user", "content": "2+2?"}])
        assert request_id_of(response) is not None and routing.stats["feedback"] == 0
        await routing.aclose()
        assert routing.stats["feedback"] == 1 and routing.stats["feedback_failed"] == 0


async def test_the_example_runs(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/litellm_router.py, as the README shows it, against this worker (fewer calls)."""
    monkeypatch.setenv("BANDITROUTE_KAFKA_BOOTSTRAP", worker.bootstrap)
    monkeypatch.setenv("BANDITROUTE_TOPIC_PREFIX", worker.prefix)
    spec = importlib.util.spec_from_file_location("litellm_router", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    await example.main(30)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"first call: request [0-9a-f]{32} served by (gpt-large|mid-tier|small-fast)", out[0]
    ), out
    assert out[1].startswith("first third") and out[2].startswith("last third")
    assert out[3] == "feedback sent: 30 of 30 calls; 0 as errors"
