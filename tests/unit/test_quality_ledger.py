"""Ledger requests as training rows: the serving model's outcome from the feedback, the others unknown."""

from __future__ import annotations

import json

from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.quality.ledger import ledger_table, output_of
from routemesh.quality.outcomes import UNKNOWN, OutcomeTable


def conversation(*turns: tuple[str, str]) -> str:
    return json.dumps([{"role": r, "content": c} for r, c in turns])


def test_each_example_teaches_only_the_output_its_model_maps_to() -> None:
    policy = parse_policy(load_default_policy_text())
    outputs = {m: output_of(policy, m) for m in policy.models}
    assert outputs["fast-cheap"] == "weak" and outputs["strong"] == "strong" and output_of(policy, "gone") == ""
    examples = [(conversation(("system", "be brief"), ("user", "first"), ("assistant", "ok"), ("user", "last")),
                 "fast-cheap", 0.9),
                (conversation(("user", "hard one")), "strong", 0.2),
                (conversation(("user", "no mapping")), "balanced", 1.0),   # balanced has no predictor output
                (conversation(("assistant", "no user turn")), "strong", 1.0)]
    table, taught = ledger_table(examples, ("weak", "strong"), outputs)
    assert table.prompts == ("last", "hard one")
    assert table.outcomes == {"weak": (1, UNKNOWN), "strong": (UNKNOWN, 0)}
    assert dict(taught) == {"weak": 1, "strong": 1}
    base = OutcomeTable(prompts=("p",), sources=("mmlu",), models=("weak", "strong"),
                        outcomes={"weak": (0,), "strong": (1,)})
    merged = base.extended(table)
    assert merged.prompts == ("p", "last", "hard one") and merged.outcomes["strong"] == (1, UNKNOWN, 0)
