"""`routemesh router train|eval`: learn the quality predictor from outcomes, and judge routing on them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from routemesh.quality.outcomes import OutcomesError, OutcomeTable, load_outcomes, shipped_outcomes_path, split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="router_command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="learn per-model success probabilities from an outcomes CSV")
    train.add_argument("--data", help="outcomes CSV (prompt, <model>_correct columns; .gz too); "
                                      "default: the outcomes shipped with routemesh")
    train.add_argument("--out", required=True, help="where to write the predictor artifact (.json.gz)")
    train.add_argument("--seed", type=int, default=0, help="training seed (same seed, same artifact)")
    train.add_argument("--from-ledger", action="store_true",
                       help="add the outcome ledger's requests that kept their text (route store_text) and got "
                            "feedback: the serving model's outcome is correct when the score is at least 0.5")
    train.add_argument("--ledger-url", default="", help="with --from-ledger: the ledger (default: "
                                                        "$ROUTEMESH_LEDGER_URL, else routemesh up's)")
    train.add_argument("--policy", metavar="FILE", help="with --from-ledger: maps served models to the predictor's "
                                                        "outputs (predicted_as); default: control's policy")
    train.add_argument("--control", default=os.environ.get("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"),
                       help="control address for the policy (env ROUTEMESH_CONTROL_ADDR)")
    evaluate = sub.add_parser("eval", help="strong-call share at 95 %% of the strong model's accuracy, APGR and "
                                           "the cost-quality curve, beside random and prompt-length routing")
    evaluate.add_argument("--data", help="outcomes CSV; default: the outcomes shipped with routemesh")
    evaluate.add_argument("--artifact", help="a predictor artifact to judge beside the baselines")
    evaluate.add_argument("--split", choices=("validation", "train", "all"), default="validation",
                          help="which rows to judge on (default: the validation split, never trained on)")
    evaluate.add_argument("--weak", help="the weak model's outcome column (default: the less accurate one)")
    evaluate.add_argument("--strong", help="the strong model's outcome column (default: the more accurate one)")
    evaluate.add_argument("--plot", help="write the cost-quality curves as a PNG here")
    evaluate.add_argument("--json", dest="json_path", help="write every figure as JSON here")


def _table(path: str | None) -> OutcomeTable:
    if path:
        return load_outcomes(path)
    return load_outcomes(shipped_outcomes_path())


def _pair(table: OutcomeTable, weak: str | None, strong: str | None) -> tuple[str, str]:
    """The weak and strong outcome columns: as named, else the least and most accurate models."""
    for name in (weak, strong):
        if name and name not in table.models:
            raise OutcomesError(f"no outcome column for model {name!r}; the data has {', '.join(table.models)}")
    by_accuracy = sorted(table.models, key=lambda m: sum(table.outcomes[m]))
    if len(by_accuracy) < 2 and not (weak and strong):
        raise OutcomesError("routing needs two models' outcomes; the data has one")
    return weak or by_accuracy[0], strong or by_accuracy[-1]


def _learned_scores(artifact: str, table: OutcomeTable, weak: str, strong: str) -> list[float]:
    """P(strong answers well) − P(weak answers well) per prompt: how much sending it to strong gains."""
    from routemesh.quality.artifact import load_artifact
    from routemesh.quality.predictor import QualityPredictor

    predictor = QualityPredictor.from_artifact(load_artifact(artifact))
    missing = [m for m in (weak, strong) if m not in predictor.models]
    if missing:
        raise OutcomesError(f"the artifact predicts {', '.join(predictor.models)}, not {', '.join(missing)}")
    scores = []
    for prompt in table.prompts:
        predicted = predictor.predict(prompt)
        scores.append(predicted[strong] - predicted[weak])
    return scores


def run_eval(args: argparse.Namespace) -> int:
    from routemesh.quality.evaluate import evaluate, format_table, to_json

    table = _table(args.data)
    if args.split != "all":
        table = split(table)[0 if args.split == "train" else 1]
    weak, strong = _pair(table, args.weak, args.strong)
    methods = {"predictor": _learned_scores(args.artifact, table, weak, strong)} if args.artifact else {}
    results = evaluate(methods, table, weak, strong)
    print(f"{args.split} rows: {len(table)}; weak = {weak}, strong = {strong}\n")
    print(format_table(results))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(to_json(results), indent=1))
    if args.plot:
        from routemesh.quality.plot import plot_curves

        print(f"\ncost-quality curves: {plot_curves(results, args.plot)}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from routemesh.quality.train import train_file

    if args.from_ledger:
        return _train_from_ledger(args)
    result = train_file(args.data or shipped_outcomes_path(), args.out, seed=args.seed)
    artifact = result.artifact
    print(f"artifact {args.out}: {Path(args.out).stat().st_size:,} bytes, sha256 {artifact.sha256}, "
          f"trained in {result.seconds:.1f} s")
    print(json.dumps({"validation": artifact.training["validation"], "fit": artifact.training["fit"]}, indent=1))
    return 0


def _train_from_ledger(args: argparse.Namespace) -> int:
    import hashlib
    from dataclasses import replace

    from routemesh.ledger_report import ledger_url, read_policy
    from routemesh.quality.artifact import save_artifact
    from routemesh.quality.ledger import from_ledger
    from routemesh.quality.train import TrainingSettings, train

    try:
        url = ledger_url(args)
        policy = read_policy(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"routemesh router train: {exc}", file=sys.stderr)
        return 2
    table, taught = from_ledger(url, policy, load_outcomes(args.data or shipped_outcomes_path()))
    print(f"ledger: {sum(taught.values()):,} requests with kept text and feedback "
          f"({', '.join(f'{o} {n:,}' for o, n in sorted(taught.items())) or 'none'}); "
          f"{len(table):,} training rows in all")
    digest = hashlib.sha256(json.dumps([table.prompts, table.outcomes], sort_keys=True).encode()).hexdigest()
    result = train(table, settings=TrainingSettings(seed=args.seed), data_sha256=digest)
    artifact = replace(result.artifact, training={**result.artifact.training, "ledger_rows": dict(taught)})
    sha256 = save_artifact(artifact, args.out)
    print(f"artifact {args.out}: {Path(args.out).stat().st_size:,} bytes, sha256 {sha256}, "
          f"trained in {result.seconds:.1f} s")
    print(json.dumps({"validation": artifact.training["validation"], "ledger_rows": dict(taught)}, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    """The `routemesh router` command; bad data, artifacts or options print one clear line and exit 2."""
    from routemesh.quality.artifact import ArtifactError

    try:
        return run_train(args) if args.router_command == "train" else run_eval(args)
    except (OutcomesError, ArtifactError, ValueError) as exc:
        print(f"routemesh router {args.router_command}: {exc}", file=sys.stderr)
        return 2
