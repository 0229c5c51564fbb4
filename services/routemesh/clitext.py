"""Human-readable printing of decisions, finals and explanations for the CLI."""

from __future__ import annotations

import sys

import grpc

from routemesh.common.outcomes import AttemptOutcome, FinishStatus
from routemesh.v1 import common_pb2, router_pb2


def enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def print_decision(d: router_pb2.Decision, out=sys.stderr) -> None:
    f = d.features
    print(f"[decision] {d.model} ({d.provider}) via {d.strategy}"
          + (f", fallbacks {', '.join(d.fallbacks)}" if d.fallbacks else ""), file=out)
    print(f"           {d.reason}", file=out)
    print(f"           task={enum_name(common_pb2.TaskType, f.task_type, 'TASK_TYPE_')} "
          f"tokens={f.input_tokens} lang={f.language} complexity={f.complexity:.2f} code={f.has_code} "
          f"(features: {f.source}); policy v{d.policy_version}; decision {d.decision_id[:12]}", file=out)
    if f.predicted_success:
        predicted = ", ".join(f"{model} {p:.2f}" for model, p in
                              sorted(f.predicted_success.items(), key=lambda item: (-item[1], item[0])))
        print(f"           predicted success: {predicted} (quality predictor {f.quality_predictor_sha256[:12]})",
              file=out)
    out.flush()


def print_final(fin: router_pb2.Final, out=sys.stderr) -> None:
    status = FinishStatus.label_of(fin.status).upper()
    est = " (estimated)" if fin.usage.estimated else ""
    print(f"[final] {status} by {fin.model or '-'}: {fin.usage.input_tokens} in / {fin.usage.output_tokens} out "
          f"tokens{est}, ${fin.cost_usd:.6f}, {len(fin.attempts)} attempt(s)"
          + (f"; trace {fin.trace_id}" if fin.trace_id else ""), file=out)
    for i, a in enumerate(fin.attempts, 1):
        outcome = AttemptOutcome.label_of(a.outcome)
        detail = f" {a.http_status}" if a.http_status else ""
        detail += f" ({a.error})" if a.error and a.outcome != AttemptOutcome.SUCCESS else ""
        print(f"        attempt {i}: {a.model}: {outcome}{detail}, ttft {a.ttft_ms:.0f} ms, "
              f"{a.duration_ms:.0f} ms", file=out)
    if fin.error and fin.status not in (FinishStatus.COMPLETE, FinishStatus.LENGTH):
        print(f"        error: {fin.error}", file=out)
    out.flush()


def print_explain(r: router_pb2.ExplainResponse, out=sys.stdout) -> None:
    print_decision(r.decision, out)
    print(f"{'rank':>4}  {'model':<16} {'provider':<10} {'score':>7} {'est. cost':>11}  notes", file=out)
    for c in r.decision.candidates:
        rank = str(c.rank) if c.eligible else "-"
        notes = c.rejection_reason or ", ".join(
            f"{k}={v:.4g}" for k, v in sorted(c.factors.items()) if k != "estimated_cost_usd")
        print(f"{rank:>4}  {c.model:<16} {c.provider:<10} {c.score:>7.3f} ${c.estimated_cost_usd:>10.6f}  {notes}",
              file=out)


def print_rpc_error(command: str, exc: grpc.RpcError, out=sys.stderr) -> int:
    """A failed call as `command: CODE: message` and one line per field problem; the exit status (1)."""
    from routemesh.client import RoutemeshError

    err = RoutemeshError.from_rpc_error(exc)
    print(f"{command}: {err.code.name}: {err.message}", file=out)
    for field, what in err.field_violations:
        print(f"  {field or '(document)'}: {what}", file=out)
    return 1
