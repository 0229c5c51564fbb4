"""Hostile policy input and caller text: rule regexes on RE2, no YAML anchors or aliases, a size cap, finite floats.

From the security review: `^(a+)+$` against 26 characters took seconds in the router's event loop, a 105 KB alias
bomb expanded to 29 MB, and NaN or inf slipped through fields with a one-sided bound (or none).
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from routemesh.common.policy import (
    MAX_POLICY_CHARS,
    PolicyError,
    canonical_json,
    load_default_policy_text,
    parse_policy,
    policy_from_json,
)
from routemesh.common.policy_schema import RuleCondition
from routemesh.router.decision.filters import (
    REGEX_TEXT_CHARS,
    RequestView,
    RoutingFeatures,
    RoutingOptionsView,
    _compiled,
    condition_matches,
    regex_matches,
)

NO_ENV: dict[str, str] = {}
DEFAULT_TEXT = load_default_policy_text()


def small_policy(regex: str = "hello", *, model_extra: str = "", route_extra: str = "") -> str:
    """A one-model policy whose route has one regex rule (YAML; the regex as a single-quoted scalar)."""
    quoted = regex.replace("'", "''")
    return f"""
providers:
  p: {{base_url: http://127.0.0.1:1/v1}}
models:
  m: {{provider: p, upstream_model: m, pricing: {{input_per_mtok: 1, output_per_mtok: 2}},
       context_window: 8000{model_extra}}}
routes:
  auto:
    models: [m]{route_extra}
    rules:
      - {{name: r, when: {{regex: '{quoted}'}}, model: m}}
"""


def violations_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, NO_ENV)
    assert caught.value.violations, "a PolicyError must list at least one violation"
    return caught.value.violations


def request(text: str) -> RequestView:
    return RequestView(features=RoutingFeatures(input_tokens=1), max_tokens=1, metadata={},
                       options=RoutingOptionsView(), text=text)


# --- rule regexes on RE2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", r"invalid escape sequence: \1"),
        (r"foo(?=bar)", "invalid perl operator: (?="),
        (r"(?<!un)safe", "invalid perl operator: (?<"),
        (r"end\Z", r"invalid escape sequence: \Z"),
        (r"(unclosed", "missing ): (unclosed"),
        (r"a{1001}", "invalid repetition size: {1001}"),
    ],
    ids=["backreference", "lookahead", "lookbehind", "python-Z", "syntax", "repetition"],
)
def test_a_regex_re2_cannot_compile_names_the_field_and_re2s_reason(pattern: str, reason: str) -> None:
    ((field, message),) = violations_of(small_policy(pattern))
    assert field == "routes.auto.rules.0.when.regex"
    assert message.startswith("not a regular expression RE2 accepts: ")
    assert reason in message


def test_re2_syntax_rules_compile() -> None:
    policy = parse_policy(small_policy(r"(?P<verb>select|update)\s+\w+.*\bfrom\b\z"), NO_ENV)
    assert policy.routes["auto"].rules[0].when.regex is not None


@pytest.mark.parametrize("length", [26, 100_000, 1_000_000])
def test_catastrophic_backtracking_pattern_runs_in_linear_time(length: int) -> None:
    # Python's re needed ~3 s for 26 a's (doubling per character); RE2 answers in microseconds to milliseconds.
    pattern = r"^(a+)+$"
    regex_matches(pattern, "warm the compiled-pattern cache")
    started = time.perf_counter()
    assert not regex_matches(pattern, "a" * length + "!")
    assert regex_matches(pattern, "a" * length)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.3f} s for {length:,} characters"


def rule_condition(regex: str) -> RuleCondition:
    return parse_policy(small_policy(regex), NO_ENV).routes["auto"].rules[0].when


def test_regex_is_case_insensitive_including_non_ascii() -> None:
    assert condition_matches(rule_condition(r"\bSELECT\b.+\bFROM\b"), request("select name from users"))
    assert not condition_matches(rule_condition(r"\bSELECT\b.+\bFROM\b"), request("selection from a menu"))
    assert regex_matches("ärger", "So ein ÄRGER")


def test_regex_reads_only_the_first_regex_text_chars() -> None:
    # The request text can be megabytes (gRPC allows 64 MB); a rule reads a bounded prefix.
    filler = "x " * (REGEX_TEXT_CHARS // 2)
    assert regex_matches("needle", "needle " + filler)
    assert not regex_matches("needle", filler + " needle")
    started = time.perf_counter()
    assert not regex_matches(r"^(a+)+$", "!" + "a" * (8 * REGEX_TEXT_CHARS))
    assert time.perf_counter() - started < 0.5
    # What a longer text leaves unread is unseen: `$` and `\z` match at the end of the prefix read.
    assert regex_matches(r"^(a+)+$", "a" * (8 * REGEX_TEXT_CHARS) + "!")


def test_a_lone_surrogate_in_the_text_does_not_raise() -> None:
    assert regex_matches("x.y", "x\ud800y") in (True, False)
    assert regex_matches("hello", "\ud800 hello")


def test_compiled_patterns_are_cached() -> None:
    _compiled.cache_clear()
    for _ in range(3):
        regex_matches("cached-pattern", "text")
    info = _compiled.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# --- YAML: no anchors or aliases, a size cap ------------------------------------------------------------------


def test_an_anchor_is_rejected_with_its_line() -> None:
    text = small_policy(route_extra="\n    weights: &w {cost: 1, latency: 0, quality: 0}")
    line = next(n for n, t in enumerate(text.splitlines(), start=1) if "&w" in t)
    ((field, message),) = violations_of(text)
    assert field == ""
    assert message.startswith("YAML anchors and aliases are not allowed in a policy: anchor &w")
    assert f"(line {line}, column 14)" in message


def test_an_alias_is_rejected_with_its_line() -> None:
    # The loader stops at the first anchor or alias: with both, the anchor (which comes first) is named.
    ((_, message),) = violations_of("x: &a 1\ny: *a\n")
    assert message == "YAML anchors and aliases are not allowed in a policy: anchor &a (line 1, column 4)"
    # An alias alone (its anchor undefined) is refused as an alias, not reported as a YAML syntax error.
    ((_, message),) = violations_of("x: 1\ny: *a\n")
    assert message == "YAML anchors and aliases are not allowed in a policy: alias *a (line 2, column 4)"


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\n"
    started = time.perf_counter()
    ((_, message),) = violations_of(bomb)
    assert time.perf_counter() - started < 0.5
    assert message.startswith("YAML anchors and aliases are not allowed in a policy: anchor &a0 (line 1,")


def test_a_document_over_the_size_cap_is_refused_before_parsing() -> None:
    text = small_policy() + "#" * (MAX_POLICY_CHARS - len(small_policy()))
    assert parse_policy(text, NO_ENV)  # exactly at the cap: accepted
    too_big = text + "#"
    ((field, message),) = violations_of(too_big)
    assert field == ""
    assert message == f"the policy is {len(too_big):,} characters; the limit is {MAX_POLICY_CHARS:,}"


def test_deep_nesting_is_a_policy_error() -> None:
    ((field, message),) = violations_of("[" * 5000 + "]" * 5000)
    assert field == ""
    assert message.startswith("not valid YAML: ")


def test_the_loader_keeps_safe_load_semantics() -> None:
    from routemesh.common.policy import _load_yaml

    assert _load_yaml(DEFAULT_TEXT) == yaml.safe_load(DEFAULT_TEXT)
    doc = "a: [1, 2.5, .inf, 2001-12-14, yes, ~, '0x10', 0x10, 1_000]\n<<: {merged: 1}\n"
    assert _load_yaml(doc) == yaml.safe_load(doc)
    with pytest.raises(PolicyError, match="not valid YAML: line 1, column 4: .*python/object"):
        _load_yaml("x: !!python/object:os.system {}")


# --- NaN and inf in float fields -----------------------------------------------------------------------------

FLOAT_FIELDS = [
    (", weight: {v}", "", "models.m.weight"),
    (", quality: {{default: {v}}}", "", "models.m.quality.dict[str,float].default"),
    (", latency_prior: {{ttft_ms: {v}}}", "", "models.m.latency_prior.ttft_ms"),
    ("", "\n    weights: {{cost: {v}}}", "routes.auto.weights.cost"),
    ("", "\n    latency: {{freshness_s: {v}}}", "routes.auto.latency.freshness_s"),
    ("", "\n    expected_output_tokens: {{default: {v}}}", "routes.auto.expected_output_tokens.default"),
]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", ".Inf"])
@pytest.mark.parametrize(("model_extra", "route_extra", "field"), FLOAT_FIELDS,
                         ids=[f[2] for f in FLOAT_FIELDS])
def test_nan_and_inf_are_rejected_naming_the_field(model_extra: str, route_extra: str, field: str,
                                                   value: str) -> None:
    text = small_policy(model_extra=model_extra.format(v=value), route_extra=route_extra.format(v=value))
    violations = violations_of(text)
    assert any(f == field and "finite number" in m for f, m in violations), violations


def test_nan_and_inf_are_rejected_in_budgets_and_health() -> None:
    text = small_policy() + "budgets:\n  - {name: b, tenant: '*', limit_usd: .inf}\nhealth:\n  circuit: {window_s: .nan}\n"
    fields = {f for f, m in violations_of(text) if "finite number" in m}
    assert fields == {"budgets.0.limit_usd", "health.circuit.window_s"}


def test_nan_is_rejected_in_pushed_json() -> None:
    doc = json.loads(canonical_json(parse_policy(small_policy(), NO_ENV)))
    doc["models"]["m"]["pricing"]["output_per_mtok"] = float("nan")
    with pytest.raises(PolicyError) as caught:
        policy_from_json(json.dumps(doc))
    assert caught.value.violations == [("models.m.pricing.output_per_mtok", "Input should be a finite number")]


def test_default_policy_parses_quickly() -> None:
    parse_policy(DEFAULT_TEXT, NO_ENV)
    started = time.perf_counter()
    for _ in range(10):
        parse_policy(DEFAULT_TEXT, NO_ENV)
    assert (time.perf_counter() - started) / 10 < 0.1
