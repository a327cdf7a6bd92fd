"""banditroute routing a LiteLLM Router, with LiteLLM's mocked responses (no API keys, no network).

Needs a broker and a worker (see the README):

    banditroute kafka up && banditroute worker &
    python examples/litellm_router.py [--calls 150]

Three deployments named after the models of config/models.yaml answer with canned text; a toy score hook
rates the answers, and every call's feedback (quality, latency, tokens priced from the catalog) goes back to
the worker on its own. banditroute moves the traffic to the cheapest model that answers right.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch its price map at import

from typing import Any

from litellm import Router

from banditroute import RouterClient
from banditroute.integrations.litellm import BanditRouting, request_id_of

ANSWERS = {"gpt-large": "Paris.", "mid-tier": "Paris.", "small-fast": "Lyon, I think."}


def deployment(name: str, group: str, answer: str) -> dict[str, Any]:
    """A LiteLLM deployment whose model_info.id is a banditroute model name; mock_response stands in for the API."""
    params = {"model": f"openai/{name}", "api_key": "sk-mock", "mock_response": answer}
    return {"model_name": group, "litellm_params": params, "model_info": {"id": name}}


def score(response: Any) -> float:
    """Quality in [0, 1]: here, whether the answer names the right city."""
    return 1.0 if "Paris" in (response.choices[0].message.content or "") else 0.0


async def main(calls: int) -> None:
    router = Router(model_list=[deployment(name, "auto", answer) for name, answer in ANSWERS.items()])
    async with RouterClient(timeout_s=5.0) as client:
        routing = BanditRouting(client, task_type="capitals", score=score).attach(router)
        served: list[str] = []
        for i in range(calls):
            response = await router.acompletion(
                model="auto", messages=[{"role": "user", "content": "Capital of France?"}]
            )
            served.append(response._hidden_params["model_id"])
            if i == 0:
                print(f"first call: request {request_id_of(response)} served by {served[0]}")
        await routing.aclose()
    third = max(calls // 3, 1)
    for label, part in (("first third", served[:third]), ("last third", served[-third:])):
        shares = collections.Counter(part)
        print(f"{label:12}", "  ".join(f"{m} {shares[m] / len(part):4.0%}" for m in ANSWERS))
    print(
        "feedback sent:",
        routing.stats["feedback"],
        "of",
        calls,
        "calls;",
        routing.stats["errors"],
        "as errors",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150)
    asyncio.run(main(parser.parse_args().calls))
