"""The policy's `alerts` section: defaults, clear errors, and webhook secrets hidden from GetPolicy."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from routemesh.common.policy import PolicyError, load_default_policy_text, parse_policy, public_json
from routemesh.common.policy_alerts import masked_header, masked_url
from routemesh.control.audit import summarize_change


def policy_doc(alerts: Any) -> str:
    doc = yaml.safe_load(load_default_policy_text())
    doc["alerts"] = alerts
    return yaml.safe_dump(doc)


def problems(alerts: Any, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_doc(alerts), environ=environ or {})
    return caught.value.violations


def test_no_alerts_section_means_no_rules_and_defaults_are_sensible():
    policy = parse_policy(load_default_policy_text(), environ={})
    assert policy.alerts.rules == () and policy.alerts.webhooks == () and policy.alerts.evaluate_every_s == 10
    policy = parse_policy(policy_doc({"webhooks": [{"name": "ops", "url": "http://127.0.0.1:9000/hook"}],
                                      "rules": [{"name": "b", "kind": "budget"},
                                                {"name": "e", "kind": "error_rate"},
                                                {"name": "f", "kind": "failover_rate"}]}), environ={})
    budget, errors, failovers = policy.alerts.rules
    assert (budget.fraction, budget.budget, budget.severity, budget.for_s) == (0.8, None, "warning", 0.0)
    assert (errors.above, errors.min_samples, errors.per) == (0.2, 20, "model")
    assert (failovers.above, failovers.window_s, failovers.min_requests) == (0.1, 60.0, 20)
    hook = policy.alerts.webhooks[0]
    assert (hook.format, hook.timeout_s, hook.max_attempts) == ("json", 5.0, 6)


@pytest.mark.parametrize("rule, field, message", [
    ({"name": "x", "kind": "nope"}, "alerts.rules.0", "does not match any of the expected tags"),
    ({"name": "x", "kind": "budget", "fraction": 1.5}, "alerts.rules.0.budget.fraction", "less than or equal to 1"),
    ({"name": "x", "kind": "budget", "fraction": 0}, "alerts.rules.0.budget.fraction", "greater than 0"),
    ({"name": "x", "kind": "latency"}, "alerts.rules.0.latency.above_ms", "Field required"),
    ({"name": "x", "kind": "latency", "above_ms": 10, "percentile": 95}, "alerts.rules.0.latency.percentile",
     "Input should be 50, 90 or 99"),
    ({"name": "x", "kind": "outage", "above": 0.5}, "alerts.rules.0.outage.above", "Extra inputs"),
    ({"name": "x", "kind": "error_rate", "for_s": -1}, "alerts.rules.0.error_rate.for_s", "greater than or equal"),
    ({"name": "x", "kind": "outage", "severity": "Very Bad"}, "alerts.rules.0.outage.severity", "pattern"),
    ({"name": "x", "kind": "outage", "models": ["nope"]}, "alerts.rules.x.models", "unknown model 'nope'"),
    ({"name": "x", "kind": "failover_rate", "routes": ["nope"]}, "alerts.rules.x.routes", "unknown route 'nope'"),
    ({"name": "x", "kind": "budget", "budget": "nope"}, "alerts.rules.x.budget", "unknown budget 'nope'"),
    ({"name": "x", "kind": "budget", "webhooks": ["nope"]}, "alerts.rules.x.webhooks", "unknown webhook 'nope'"),
])
def test_bad_rules_are_named_with_their_field(rule, field, message):
    found = problems({"webhooks": [{"name": "ops", "url": "http://h/x"}], "rules": [rule]})
    assert any(f == field and message in m for f, m in found), found


@pytest.mark.parametrize("hook, message", [
    ({"name": "a", "url": "ftp://h/x"}, "must be an http:// or https:// URL"),
    ({"name": "a", "url": "http://h/${oops"}, "does not open a ${NAME}"),
    ({"name": "a", "url": "http://h", "format": "teams"}, "'json' or 'slack'"),
    ({"name": "a", "url": "http://h", "headers": {"Content-Type": "text/plain"}}, "set by routemesh"),
    ({"name": "a", "url": "http://h", "headers": {"X": "a\nb"}}, "no line breaks"),
    ({"name": "a", "url": "http://h", "headers": {"bad name": "v"}}, "not an HTTP token"),
])
def test_bad_webhooks_are_refused(hook, message):
    found = problems({"webhooks": [hook]})
    assert any(message in m for _, m in found), found


def test_names_are_unique_and_env_references_must_be_allowed():
    found = problems({"webhooks": [{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://h"}],
                      "rules": [{"name": "r", "kind": "outage"}, {"name": "r", "kind": "budget"}]})
    assert ("alerts.webhooks", "the name 'a' is used twice") in found
    assert ("alerts.rules", "the name 'r' is used twice") in found
    found = problems({"webhooks": [{"name": "a", "url": "http://h/x", "headers": {"Authorization": "Bearer ${HOME}"}}]})
    assert found[0][0] == "alerts.webhooks.a" and "HOME may not be read" in found[0][1]
    # Allowed names pass whether or not control has them: telemetry expands them when it sends.
    parse_policy(policy_doc({"webhooks": [{"name": "a", "url": "${ROUTEMESH_POLICY_HOOK_URL}"}]}), environ={})


def test_get_policy_hides_literal_webhook_secrets_and_shows_references_as_written():
    policy = parse_policy(policy_doc({"webhooks": [
        {"name": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZ", "format": "slack"},
        {"name": "ops", "url": "https://ops:pa55@alerts.example.com:8443/hook?token=abc",
         "headers": {"Authorization": "Bearer s3cret", "X-Token": "Bearer ${ROUTEMESH_POLICY_OPS_TOKEN}"}},
        {"name": "env", "url": "https://hooks.slack.com/services/${ROUTEMESH_POLICY_SLACK_PATH}"},
    ]}), environ={})
    shown = public_json(policy, {})
    hooks = {hook["name"]: hook for hook in json.loads(shown)["alerts"]["webhooks"]}
    assert hooks["slack"]["url"] == "https://hooks.slack.com/***"
    assert hooks["ops"]["url"] == "https://ops:***@alerts.example.com:8443/***"
    assert hooks["ops"]["headers"] == {"Authorization": "***", "X-Token": "Bearer ${ROUTEMESH_POLICY_OPS_TOKEN}"}
    assert hooks["env"]["url"] == "https://hooks.slack.com/services/${ROUTEMESH_POLICY_SLACK_PATH}"
    for secret in ("XYZ", "pa55", "abc", "s3cret"):
        assert secret not in shown


def test_masking_helpers():
    assert masked_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert masked_url("http://127.0.0.1:9000/") == "http://127.0.0.1:9000/"
    assert masked_url("http://u:${ROUTEMESH_POLICY_P}@h/x") == "http://u:${ROUTEMESH_POLICY_P}@h/x"
    assert masked_url("http://u:pw@h/${ROUTEMESH_POLICY_P}") == "http://u:***@h/${ROUTEMESH_POLICY_P}"
    assert masked_header("${ROUTEMESH_POLICY_T}") == "${ROUTEMESH_POLICY_T}" and masked_header("abc") == "***"


def test_the_audit_log_says_when_alerts_changed():
    before = parse_policy(load_default_policy_text(), environ={})
    after = parse_policy(policy_doc({"rules": [{"name": "down", "kind": "outage"}]}), environ={})
    assert summarize_change(before, after) == "alerts changed"
