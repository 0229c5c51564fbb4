"""Outcomes from the ledger: requests whose route kept their text and that got feedback, as training rows.

Each such request says how one model did on one prompt: the model that served it, mapped to the predictor's
output by the policy (`predicted_as`, or the same name), is correct when the feedback score is at least 0.5.
Its other outcomes are UNKNOWN: training fits each model on the rows that know it, and calibrates thresholds
on the rows that know every model (the shipped outcomes). The prompt is the conversation's last user message,
as the router's classifier reads it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping

from routemesh.common.policy import Policy
from routemesh.quality.outcomes import UNKNOWN, OutcomeTable

CORRECT_AT = 0.5


def output_of(policy: Policy, model: str) -> str:
    """The predictor output a policy model's outcome teaches ("" for a model the policy no longer has)."""
    compiled = policy.models.get(model)
    if compiled is None:
        return ""
    return compiled.predicted_as or model


def _prompt(conversation: str) -> str:
    messages = json.loads(conversation)
    users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


def ledger_table(examples: list[tuple[str, str, float]], outputs: tuple[str, ...],
                 output_of_model: Mapping[str, str]) -> tuple[OutcomeTable, Counter[str]]:
    """The training rows of ledger examples for a predictor with `outputs`; and how many rows teach each."""
    prompts, values = [], {o: [] for o in outputs}
    taught: Counter[str] = Counter()
    for conversation, model, score in examples:
        output = output_of_model.get(model, "")
        prompt = _prompt(conversation)
        if output not in values or not prompt.strip():
            continue
        prompts.append(prompt)
        for name in outputs:
            values[name].append(int(score >= CORRECT_AT) if name == output else UNKNOWN)
        taught[output] += 1
    table = OutcomeTable(prompts=tuple(prompts), sources=("ledger",) * len(prompts), models=outputs,
                         outcomes={o: tuple(v) for o, v in values.items()})
    return table, taught


async def read_examples(url: str) -> list[tuple[str, str, float]]:
    from routemesh.telemetry.ledger.stores import ledger_store

    store = ledger_store(url)
    await store.open()
    try:
        return await store.examples()
    finally:
        await store.close()


def from_ledger(url: str, policy: Policy, base: OutcomeTable) -> tuple[OutcomeTable, Counter[str]]:
    """`base` (the shipped outcomes, or --data) with the ledger's rows after it."""
    examples = asyncio.run(read_examples(url))
    outputs = {model: output_of(policy, model) for model in policy.models}
    extra, taught = ledger_table(examples, base.models, outputs)
    return base.extended(extra), taught
