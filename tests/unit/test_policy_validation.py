"""The policy model: the default validates, and each kind of mistake is reported against its field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from routemesh.common.policy import (
    Policy,
    PolicyError,
    canonical_json,
    digest,
    expand_env,
    load_default_policy_text,
    parse_policy,
    policy_from_json,
)

DEFAULT_TEXT = load_default_policy_text()
DEFAULT_DOC: dict[str, Any] = yaml.safe_load(DEFAULT_TEXT)
NO_ENV: dict[str, str] = {}


def edited(edit: Callable[[dict[str, Any]], None]) -> str:
    """The default policy with one edit applied, as YAML."""
    doc = copy.deepcopy(DEFAULT_DOC)
    edit(doc)
    return yaml.safe_dump(doc)


def violations_of(text: str, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, NO_ENV if environ is None else environ)
    assert caught.value.violations, "a PolicyError must list at least one violation"
    return caught.value.violations


def test_default_policy_validates() -> None:
    policy = parse_policy(DEFAULT_TEXT, NO_ENV)
    assert isinstance(policy, Policy)
    assert policy.defaults.route in policy.routes
    assert policy.providers["sim"].base_url == "http://127.0.0.1:50056/v1"


def test_canonical_json_round_trips_with_a_stable_digest() -> None:
    policy = parse_policy(DEFAULT_TEXT, NO_ENV)
    text = canonical_json(policy)
    assert policy_from_json(text) == policy
    reordered = yaml.safe_dump(DEFAULT_DOC, sort_keys=True)
    assert digest(canonical_json(parse_policy(reordered, NO_ENV))) == digest(text)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _rename(path: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path.split("/"):
            node = node[key]
        node[new] = node.pop(old)

    return edit


INVALID_EDITS = [
    ("unknown provider", _set("models/fast-cheap/provider", "nope"),
     "models.fast-cheap.provider", "unknown provider 'nope'"),
    ("unknown model in a route", _set("routes/cheap/models", ["flaky", "fast-cheep"]),
     "routes.cheap.models", "unknown model 'fast-cheep'"),
    ("unknown model in a rule", _set("routes/auto/rules/0/models", ["strong", "gpt-9"]),
     "routes.auto.rules.premium-tier.models", "unknown model 'gpt-9'"),
    ("unknown model in fallbacks", _set("routes/premium/fallbacks", ["balancd"]),
     "routes.premium.fallbacks", "unknown model 'balancd'"),
    ("negative price", _set("models/strong/pricing/input_per_mtok", -1),
     "models.strong.pricing.input_per_mtok", "greater than or equal to 0"),
    ("unknown key (typo)", _rename("models/strong", "pricing", "pricng"),
     "models.strong.pricng", "Extra inputs are not permitted"),
    ("bad base_url", _set("providers/sim/base_url", "ftp://example.com"),
     "providers.sim.base_url", "http:// or https:// URL"),
    ("unknown task type", _set("routes/auto/rules/2/when/task_types", ["code", "poetry"]),
     "routes.auto.rules.2.when.task_types", "unknown task type(s) ['poetry']"),
    ("unknown default route", _set("defaults/route", "fastest"),
     "defaults.route", "unknown route 'fastest'"),
    ("missing environment variable", _set("providers/sim/base_url", "${ROUTEMESH_POLICY_TEST_UNSET_URL}"),
     "providers.sim.base_url", "ROUTEMESH_POLICY_TEST_UNSET_URL is not set"),
]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [case[1:] for case in INVALID_EDITS],
    ids=[case[0] for case in INVALID_EDITS],
)
def test_invalid_policy_names_the_field(
    edit: Callable[[dict[str, Any]], None], field: str, message: str
) -> None:
    violations = violations_of(edited(edit))
    assert any(f == field and message in m for f, m in violations), violations


def test_unknown_key_also_reports_the_missing_required_field() -> None:
    violations = violations_of(edited(_rename("models/strong", "pricing", "pricng")))
    assert {f for f, _ in violations} == {"models.strong.pricng", "models.strong.pricing"}


def test_every_violation_is_reported_at_once() -> None:
    def many(doc: dict[str, Any]) -> None:
        doc["models"]["fast-cheap"]["provider"] = "nope"
        doc["models"]["balanced"]["provider"] = "other"
        doc["defaults"]["route"] = "fastest"

    fields = sorted(f for f, _ in violations_of(edited(many)))
    assert fields == ["defaults.route", "models.balanced.provider", "models.fast-cheap.provider"]


def test_reference_messages_are_not_split_apart() -> None:
    (violation,) = violations_of(edited(_set("models/fast-cheap/provider", "nope")))
    assert violation == ("models.fast-cheap.provider", "unknown provider 'nope'; defined: ['sim']")


def test_yaml_syntax_error_gives_the_line() -> None:
    lines = DEFAULT_TEXT.splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if text.startswith("  route: auto"))
    lines[line - 1] = "  route: auto: extra"
    ((field, message),) = violations_of("\n".join(lines))
    assert field == ""
    assert message.startswith(f"not valid YAML: line {line}, column 14: mapping values are not allowed")


@pytest.mark.parametrize("text", ["", "just a string", "- a\n- list\n", "42"])
def test_a_document_that_is_not_a_mapping_is_rejected(text: str) -> None:
    ((field, message),) = violations_of(text)
    assert field == ""
    assert "must be a mapping" in message


def test_invalid_name_is_reported_against_its_section() -> None:
    violations = violations_of(edited(_rename("routes", "cheap", "cheap route")))
    assert ("routes", "name 'cheap route' must match ^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$") in violations


def test_env_expansion_uses_the_variable_then_the_default() -> None:
    text = edited(_set("providers/sim/base_url", "${ROUTEMESH_POLICY_TEST_URL:-http://fallback:1/v1}"))
    assert parse_policy(text, {}).providers["sim"].base_url == "http://fallback:1/v1"
    assert parse_policy(text, {"ROUTEMESH_POLICY_TEST_URL": ""}).providers["sim"].base_url == "http://fallback:1/v1"
    chosen = parse_policy(text, {"ROUTEMESH_POLICY_TEST_URL": "https://sim.internal:8443/v1/"})
    assert chosen.providers["sim"].base_url == "https://sim.internal:8443/v1"


def test_missing_env_variable_is_reported_once_per_provider() -> None:
    def two_providers(doc: dict[str, Any]) -> None:
        doc["providers"]["sim"]["base_url"] = "${ROUTEMESH_POLICY_TEST_A}"
        doc["providers"]["other"] = {"base_url": "${ROUTEMESH_POLICY_TEST_B}/v1"}

    violations = violations_of(edited(two_providers))
    assert sorted(f for f, _ in violations) == ["providers.other.base_url", "providers.sim.base_url"]


def test_expand_env_leaves_plain_text_alone() -> None:
    assert expand_env("http://a:1/v1", {}) == "http://a:1/v1"
    assert expand_env("${ROUTEMESH_POLICY_H:-x}://${ROUTEMESH_POLICY_H2:-y}", {"ROUTEMESH_POLICY_H2": "z"}) == "x://z"


SECRET = "sk-canary-4f1c9e"


def test_a_policy_reads_only_the_variables_the_operator_allows_and_never_echoes_a_value() -> None:
    env = {"OPENAI_API_KEY": SECRET, "ROUTEMESH_REDIS_URL": f"redis://:{SECRET}@redis:6379/0"}
    for name in ("OPENAI_API_KEY", "ROUTEMESH_REDIS_URL"):
        with pytest.raises(PolicyError) as raised:
            parse_policy(edited(_set("providers/sim/base_url", f"http://x/${{{name}}}")), env)
        assert SECRET not in str(raised.value)
        assert f"environment variable {name} may not be read by a policy" in str(raised.value)
    # The operator widens the list; a value that is not a URL is still not quoted back.
    widened = {**env, "ROUTEMESH_POLICY_ENV_ALLOW": "OPENAI_*,ROUTEMESH_SIM_URL"}
    with pytest.raises(PolicyError) as raised:
        parse_policy(edited(_set("providers/sim/base_url", "${OPENAI_API_KEY}")), widened)
    assert SECRET not in str(raised.value)
    assert dict(raised.value.violations)["providers.sim.base_url"] == \
        "the URL its ${VAR} references expand to is not an http:// or https:// URL"


def test_provider_hosts_can_be_limited_to_an_allow_list() -> None:
    text = edited(_set("providers/sim/base_url", "https://evil.example.net/v1"))
    assert parse_policy(text, {}).providers["sim"].base_url == "https://evil.example.net/v1"
    allow = {"ROUTEMESH_PROVIDER_HOSTS": "api.openai.com, *.internal"}
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, allow)
    assert dict(raised.value.violations) == {
        "providers.sim.base_url": "host 'evil.example.net' is not one the operator allows "
                                  "(api.openai.com, *.internal; ROUTEMESH_PROVIDER_HOSTS)"}
    ok = parse_policy(edited(_set("providers/sim/base_url", "http://sim.internal:50056/v1")), allow)
    assert ok.providers["sim"].base_url == "http://sim.internal:50056/v1"
