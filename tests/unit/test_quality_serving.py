"""The quality predictor as the policy names it: found, checked, mapped to models; quality_target routing."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
from routemesh.classifier.main import _quality as classifier_compile
from routemesh.common.policy import PolicyError, PolicyVersion, canonical_json, digest, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.control.registry import PolicyRegistry
from routemesh.quality.artifact import ArtifactError
from routemesh.quality.serving import artifact_path, policy_quality
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.filters import RoutingFeatures, RoutingOptionsView
from routemesh.router.decision.planner import DecisionState, plan_request
from routemesh.v1 import control_pb2

DEFAULT_TEXT = load_default_policy_text()
SHIPPED = "routemesh:quality/predictor.json.gz"
SHIPPED_SHA = parse_policy(DEFAULT_TEXT).quality_predictor.sha256


def policy_text(artifact: str = SHIPPED, sha256: str = SHIPPED_SHA, *, target: float = 0.95,
                predicted_as: str = "weak", extra_model: str = "") -> str:
    """Three models: `cheap` predicted as the artifact's weak output, `strong` by name, `mid` static only."""
    return f"""
quality_predictor: {{artifact: "{artifact}", sha256: "{sha256}"}}
providers:
  p: {{base_url: http://127.0.0.1:1/v1}}
models:
  cheap:  {{provider: p, upstream_model: c, pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.4}},
           context_window: 8000, quality: 0.5, predicted_as: {predicted_as}}}
  mid:    {{provider: p, upstream_model: m, pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}},
           context_window: 8000, quality: 0.8}}
  strong: {{provider: p, upstream_model: s, pricing: {{input_per_mtok: 10.0, output_per_mtok: 30.0}},
           context_window: 8000, quality: 0.9}}
{extra_model}
routes:
  auto: {{strategy: quality_target, quality_target: {target}, models: [cheap, strong]}}
  mixed: {{strategy: quality_target, models: [mid, strong]}}
  hybrid: {{strategy: hybrid, weights: {{cost: 0, latency: 0, quality: 1}}, models: [cheap, mid, strong]}}
"""


def without_predictor(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("quality_predictor:"))


def routed(text: str, predicted: dict[str, float], route: str = "auto"):
    return plan_request(RoutingPolicy(parse_policy(text)), RoutingFeatures(input_tokens=50, predicted_success=predicted),
                        route, 100, {}, {}, options=RoutingOptionsView(), state=DecisionState(seed=1), now_ms=0)


def violations(text: str) -> dict[str, str]:
    with pytest.raises(PolicyError) as raised:
        policy_quality(parse_policy(text))
    return dict(raised.value.violations)


# ---- finding and checking the artifact ------------------------------------------------------------------

def test_shipped_artifacts_resolve_inside_the_package_and_nothing_else_does():
    assert artifact_path(SHIPPED).is_file()
    assert artifact_path("/srv/models/p.json.gz") == Path("/srv/models/p.json.gz")
    for bad in ("routemesh:quality/../policies/default.yaml", "routemesh:other/x.gz", "routemesh:quality/"):
        with pytest.raises(ArtifactError, match="routemesh ships artifacts only"):
            artifact_path(bad)


def test_models_map_to_outputs_by_name_or_predicted_as_and_the_rest_keep_the_static_table():
    quality = policy_quality(parse_policy(policy_text()))
    assert quality is not None and quality.sha256 == SHIPPED_SHA
    assert dict(quality.outputs) == {"cheap": "weak", "strong": "strong"}
    predicted = quality.predict("What is the capital of France?")
    assert set(predicted) == {"cheap", "strong"} and all(0 < p < 1 for p in predicted.values())
    assert quality.curve("cheap", "strong") is not None
    assert quality.curve("strong", "cheap") is None and quality.curve("mid", "strong") is None
    assert policy_quality(parse_policy(without_predictor(policy_text()).replace(", predicted_as: weak", ""))) is None


def test_a_missing_corrupt_or_other_artifact_is_a_policy_error_naming_the_field(tmp_path):
    missing = violations(policy_text(artifact=str(tmp_path / "nope.json.gz")))
    assert "cannot read it" in missing["quality_predictor.artifact"]
    other_digest = violations(policy_text(sha256="0" * 64))
    assert f"sha256 is {SHIPPED_SHA}, expected {'0' * 64}" in other_digest["quality_predictor.artifact"]
    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(b"not gzip at all")
    bad = violations(policy_text(artifact=str(corrupt), sha256=hashlib.sha256(corrupt.read_bytes()).hexdigest()))
    assert "not a gzip-compressed file" in bad["quality_predictor.artifact"]
    wrong_kind = tmp_path / "other.json.gz"
    wrong_kind.write_bytes(gzip.compress(b'{"format": "something-else"}', mtime=0))
    kind = violations(policy_text(artifact=str(wrong_kind), sha256=hashlib.sha256(wrong_kind.read_bytes()).hexdigest()))
    assert "not a routemesh-quality-predictor artifact" in kind["quality_predictor.artifact"]
    unknown = violations(policy_text(predicted_as="mixtral"))
    assert unknown == {"models.cheap.predicted_as": "the quality predictor has no output 'mixtral'; "
                                                    "it predicts ['strong', 'weak']"}


def test_the_schema_wants_a_digest_and_a_predictor_for_predicted_as():
    with pytest.raises(PolicyError) as raised:
        parse_policy(policy_text(sha256="abc"))
    assert "quality_predictor.sha256" in dict(raised.value.violations)
    without = without_predictor(policy_text())
    with pytest.raises(PolicyError) as raised:
        parse_policy(without)
    assert dict(raised.value.violations) == {
        "models.cheap.predicted_as": "set, but the policy names no quality_predictor"}
    with pytest.raises(PolicyError) as raised:
        parse_policy(policy_text(artifact="models/predictor.json.gz"))
    assert "must be an absolute path" in dict(raised.value.violations)["quality_predictor.artifact"]


def test_control_refuses_a_policy_whose_artifact_does_not_load(tmp_path):
    registry = PolicyRegistry()
    registry.load(policy_text(), "test")
    with pytest.raises(PolicyError, match="cannot read it"):
        registry.load(policy_text(artifact=str(tmp_path / "gone.json.gz")), "test")
    assert registry.current.version == 1


def _pushed(text: str, version: int) -> control_pb2.Policy:
    policy_json = canonical_json(parse_policy(text))
    return control_pb2.Policy(version=version, digest=digest(policy_json), policy_json=policy_json, source="test")


def test_the_classifier_keeps_its_last_good_predictor_when_a_new_artifact_does_not_load(tmp_path):
    holder = PolicyHolder(compile=classifier_compile)
    assert holder.apply(_pushed(policy_text(), 1))
    good = holder.current
    artifact = tmp_path / "predictor.json.gz"
    artifact.write_bytes(artifact_path(SHIPPED).read_bytes())
    artifact.write_bytes(b"truncated")  # the file changed after the policy was written: its digest no longer holds
    assert not holder.apply(_pushed(policy_text(artifact=str(artifact)), 2))
    assert holder.current is good and holder.current_version.version == 1
    # The router's compiled policy refuses it the same way (PolicyHolder keeps the router's last good one too).
    with pytest.raises(PolicyError):
        RoutingPolicy.compile(PolicyVersion(parse_policy(policy_text(artifact=str(artifact))), 2, "d"))


# ---- deciding with it ------------------------------------------------------------------------------------

def test_quality_target_keeps_the_cheap_model_while_the_gap_is_within_the_calibrated_threshold():
    quality = policy_quality(parse_policy(policy_text()))
    allowed = quality.curve("cheap", "strong").threshold(0.95)
    close = routed(policy_text(), {"cheap": 0.80, "strong": 0.80 + allowed * 0.9})
    assert close.models == ["cheap", "strong"]
    assert f"cheap keeps 95% of strong (gap {allowed * 0.9:.3f} <= {allowed:.3f} calibrated for 95%)" in close.reason
    far = routed(policy_text(), {"cheap": 0.50, "strong": 0.50 + allowed * 1.1})
    assert far.models == ["strong", "cheap"]
    assert "cheap below target" in far.reason and "strong has the best predicted success" in far.reason
    by_model = {c.model: c.factors for c in far.candidates}
    assert by_model["cheap"]["predicted_success"] == 0.50
    assert by_model["cheap"]["quality_gap_allowed"] == pytest.approx(allowed)


def test_a_higher_target_sends_more_prompts_to_the_strong_model():
    curve = policy_quality(parse_policy(policy_text())).curve("cheap", "strong")
    assert curve.threshold(0.99) < curve.threshold(0.95) < curve.threshold(0.85)
    gap = (curve.threshold(0.99) + curve.threshold(0.95)) / 2
    predicted = {"cheap": 0.6, "strong": 0.6 + gap}
    assert routed(policy_text(target=0.95), predicted).primary == "cheap"
    assert routed(policy_text(target=0.99), predicted).primary == "strong"


def test_without_calibration_quality_target_compares_quality_to_the_target_share_of_the_best():
    # mid has no prediction: its static 0.8 against strong's predicted success.
    assert routed(policy_text(), {"cheap": 0.5, "strong": 0.84}, "mixed").primary == "mid"
    low = routed(policy_text(), {"cheap": 0.5, "strong": 0.9}, "mixed")
    assert low.primary == "strong" and "static quality 0.800 < 95% of 0.900" in low.reason
    # No prediction at all (the classifier and the router both without a predictor): the static table.
    assert routed(policy_text(), {}, "auto").primary == "strong"


def test_hybrid_scores_the_predicted_quality_where_there_is_one():
    # Quality weight only: the static table would pick strong (0.9); the prediction says cheap will do better.
    result = routed(policy_text(), {"cheap": 0.95, "strong": 0.7}, "hybrid")
    assert result.primary == "cheap"
    factors = {c.model: c.factors for c in result.candidates}
    assert factors["cheap"]["quality_score"] == 0.95 and factors["mid"]["quality_score"] == 0.8
    assert "predicted_success" not in factors["mid"]
