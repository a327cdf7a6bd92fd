"""The OpenAI-SDK wrapper against the real broker and a worker, calling a local OpenAI-compatible stub server on
127.0.0.1 (no network): routing follows what the worker learnt, one feedback per call (rate limits, server
errors, timeouts and fallbacks too), the served model is credited; the synchronous client likewise."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from banditroute.client import SyncRouterClient
from banditroute.integrations.openai import Endpoint, RoutedAsyncOpenAI, RoutedOpenAI, request_id_of
from tests.integrations.stub_openai import Behaviour, stub_server
from tests.integrations.worker import Worker, topic_records, wait_ready

pytestmark = pytest.mark.kafka

ASK = [{"role": "user", "content": "2 + 2?"}]


def score(response: Any) -> float:
    return 1.0 if response.choices[0].message.content == "right" else 0.0


async def feedback_by_request(worker: Worker, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in await topic_records(worker, "feedback"):
        if f["request_id"] in ids:
            out.setdefault(f["request_id"], []).append(f)
    return out


async def test_routing_follows_what_the_worker_learnt(worker: Worker) -> None:
    with stub_server({"strong": Behaviour("right"), "weak": Behaviour("wrong")}) as stub:
        async with worker.client() as client:
            await wait_ready(client)
            routed = RoutedAsyncOpenAI(
                client,
                {
                    "strong": stub.url("strong"),
                    "weak": Endpoint(
                        openai.AsyncOpenAI(base_url=stub.url("weak"), api_key="k", max_retries=0),
                        model="weak-v2",
                    ),
                },
                task_type="oa-qa",
                score=score,
            )
            served = []
            for _ in range(10):  # rounds of 10 concurrent calls; the worker learns between them
                responses = await asyncio.gather(
                    *(routed.chat.completions.create(messages=ASK) for _ in range(10))
                )
                served += [r.model for r in responses]
    late = served[-30:]
    assert late.count("strong") >= 27, f"last 30 calls: {late.count('strong')} to strong"
    assert {m for _, m in stub.calls} == {"strong", "weak-v2"}  # Endpoint.model is what the endpoint is sent
    assert routed.stats["feedback"] == 100 and routed.stats["feedback_failed"] == 0


async def test_one_feedback_per_call_with_errors_timeouts_and_fallbacks(worker: Worker) -> None:
    behaviours = {
        "strong": Behaviour("right"),
        "flaky": Behaviour(status=429),
        "weak": Behaviour(status=500),
        "slow": Behaviour("right", delay_s=2.0),
    }
    with stub_server(behaviours) as stub:
        async with worker.client() as client:
            await wait_ready(client)
            rescued = RoutedAsyncOpenAI(
                client,
                {"flaky": stub.url("flaky"), "strong": stub.url("strong")},
                task_type="oa-fb",
                score=score,
            )
            served = {}
            for _ in range(16):
                response = await rescued.chat.completions.create(messages=ASK)
                served[request_id_of(response)] = response.model
            doomed = RoutedAsyncOpenAI(
                client, {"flaky": stub.url("flaky"), "weak": stub.url("weak")}, task_type="oa-fb", score=score
            )
            timed_out = RoutedAsyncOpenAI(
                client, {"strong": stub.url("slow")}, task_type="oa-fb", timeout_s=0.3
            )
            for _ in range(3):
                with pytest.raises((openai.RateLimitError, openai.InternalServerError)):
                    await doomed.chat.completions.create(messages=ASK)
            with pytest.raises(openai.APITimeoutError):
                await timed_out.chat.completions.create(messages=ASK)
    decisions = {
        d["request_id"]: d for d in await topic_records(worker, "decisions") if d["task_type"] == "oa-fb"
    }
    feedback = await feedback_by_request(worker, set(decisions))
    assert len(decisions) == 16 + 3 + 1
    assert all(len(fs) == 1 for fs in feedback.values()) and len(feedback) == len(decisions)
    ok = {rid: fs[0] for rid, fs in feedback.items() if rid in served}
    assert all(f["model"] == served[rid] == "strong" and f["quality"] == 1.0 for rid, f in ok.items())
    assert any(decisions[rid]["model"] == "flaky" for rid in ok), "no call was routed to flaky first"
    errors = [fs[0] for rid, fs in feedback.items() if rid not in served]
    # the doomed calls end with the second model they tried; the timed-out one with its only model
    kinds = sorted((f["model"], f["error"]) for f in errors)
    assert kinds.count(("strong", "timeout")) == 1
    assert all(
        (m, e) in (("flaky", "rate_limited"), ("weak", "provider_error"), ("strong", "timeout"))
        for m, e in kinds
    )
    assert len(kinds) == 4
    assert rescued.stats["feedback"] == 16 and doomed.stats["errors"] == 3 and timed_out.stats["errors"] == 1
    dead = [d for d in await topic_records(worker, "deadletter") if d["source_topic"].endswith(".feedback")]
    assert dead == [], [(d["reason"], d["error"]) for d in dead]


async def test_sync_client_and_quality_sent_later(worker: Worker) -> None:
    with stub_server({"strong": Behaviour("right"), "weak": Behaviour("wrong")}) as stub:
        sync_client = SyncRouterClient(bootstrap=worker.bootstrap, topic_prefix=worker.prefix, timeout_s=10.0)

        def run() -> tuple[list[Any], RoutedOpenAI]:
            with sync_client:
                routed = RoutedOpenAI(
                    sync_client, {"strong": stub.url("strong"), "weak": stub.url("weak")}, task_type="oa-sync"
                )
                responses = [routed.chat.completions.create(messages=ASK) for _ in range(4)]
                assert routed.stats["feedback"] == 0 and routed.stats["awaiting_quality"] == 4
                for response in responses:
                    assert routed.feedback(response, quality=score(response))
                return responses, routed

        responses, routed = await asyncio.to_thread(run)
    ids = {request_id_of(r): r for r in responses}
    feedback = await feedback_by_request(worker, set(ids))
    assert sorted(feedback) == sorted(ids) and all(len(fs) == 1 for fs in feedback.values())
    for rid, (f,) in feedback.items():
        assert f["model"] == ids[rid].model and f["quality"] == score(ids[rid]) and f["tokens_in"] == 3
    assert routed.stats["feedback"] == 4
