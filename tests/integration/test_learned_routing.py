"""Learned routing through a real mesh: the classifier serves a trained predictor, quality_target routes by it.

A predictor is trained here on outcomes with a planted signal (prompts with "quantum" only the strong model
answers), named in the policy with its digest, and hot-swapped for one trained on the opposite signal.
"""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import Iterator

import pytest
import yaml

from routemesh.client import RouterClient
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.mesh import Mesh, MeshLayout
from routemesh.quality.train import train_file
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE, write_atomically
from tests.planted import planted_csv, planted_prompt

pytestmark = pytest.mark.integration
ROUTE = "learned"
HARD = planted_prompt(random.Random(1), planted=True)
EASY = planted_prompt(random.Random(2), planted=False)


def policy_text(artifact: pathlib.Path, sha256: str) -> str:
    """The default policy with this predictor, and a route choosing fast-cheap or strong by it."""
    doc = yaml.safe_load(load_default_policy_text())
    doc["quality_predictor"] = {"artifact": str(artifact), "sha256": sha256}
    doc["routes"][ROUTE] = {"strategy": "quality_target", "quality_target": 0.95, "models": ["fast-cheap", "strong"]}
    text = yaml.safe_dump(doc, sort_keys=False)
    parse_policy(text)
    return text


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, tuple[pathlib.Path, str]]:
    folder = tmp_path_factory.mktemp("learned")
    out = {}
    for name, data in (("planted", planted_csv(folder / "planted.csv")),
                       ("inverted", planted_csv(folder / "inverted.csv", planted_is_hard=False))):
        result = train_file(data, folder / f"{name}.json.gz", seed=0)
        out[name] = (folder / f"{name}.json.gz", result.artifact.sha256)
    return out


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory, artifacts) -> pathlib.Path:
    path = tmp_path_factory.mktemp("learned-policy") / "policy.yaml"
    path.write_text(policy_text(*artifacts["planted"]))
    return path


@pytest.fixture(scope="module")
def learned_mesh(tmp_path_factory, policy_path, redis_prefix) -> Iterator[Mesh]:
    mesh = Mesh(MeshLayout.free(), policy=str(policy_path), redis_url=REDIS_URL, redis_prefix=f"{redis_prefix}learned:",
                sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("learned-logs"),
                extra_args={"control": ["--poll-interval-s", "0.1"]})
    mesh.start()
    yield mesh
    mesh.stop()


def explain(mesh: Mesh, prompt: str):
    with RouterClient(mesh.layout.address("router")) as client:
        return client.explain(prompt, model=ROUTE).decision


def test_the_classifier_serves_predicted_success_and_explain_says_why(learned_mesh, artifacts):
    _, sha256 = artifacts["planted"]
    hard, easy = explain(learned_mesh, HARD), explain(learned_mesh, EASY)
    for decision in (hard, easy):
        features = decision.features
        assert features.source == "classifier"
        assert features.quality_predictor_sha256 == sha256
        assert set(features.predicted_success) == {"fast-cheap", "strong"}
    assert hard.features.predicted_success["strong"] - hard.features.predicted_success["fast-cheap"] > 0.3
    assert (hard.model, easy.model) == ("strong", "fast-cheap")
    assert "fast-cheap below target (gap" in hard.reason and "calibrated for 95%" in hard.reason
    # On the easy prompts the weak model is right more often than the strong one (always against 80 %).
    assert "fast-cheap has the best predicted success" in easy.reason
    factors = {c.model: dict(c.factors) for c in hard.candidates}
    assert factors["strong"]["predicted_success"] == pytest.approx(hard.features.predicted_success["strong"])
    assert "quality_gap_allowed" in factors["fast-cheap"]


def test_a_chat_is_served_by_the_model_the_prediction_chose(learned_mesh):
    with RouterClient(learned_mesh.layout.address("router")) as client:
        hard = client.complete(HARD, model=ROUTE)
        easy = client.complete(EASY, model=ROUTE)
    assert (hard.final.model, easy.final.model) == ("strong", "fast-cheap")


def test_a_bad_artifact_is_refused_and_a_new_one_is_hot_reloaded(learned_mesh, policy_path, artifacts, tmp_path):
    before = explain(learned_mesh, EASY)
    control_log = learned_mesh.log_dir / "control.log"
    # A digest that is not the file's, then a file that is not there: control refuses both, naming the field,
    # and the mesh keeps routing with the last good policy and predictor.
    for text, why in ((policy_text(artifacts["planted"][0], "0" * 64), f"expected {'0' * 64}"),
                      (policy_text(tmp_path / "missing.json.gz", artifacts["planted"][1]), "cannot read it")):
        write_atomically(policy_path, text)
        deadline = time.monotonic() + 10
        while "quality_predictor.artifact: " not in (log := control_log.read_text()) or why not in log:
            assert time.monotonic() < deadline, "control did not refuse the policy"
            time.sleep(0.1)
    still = explain(learned_mesh, EASY)
    assert (still.policy_version, still.model) == (before.policy_version, "fast-cheap")
    assert still.features.quality_predictor_sha256 == artifacts["planted"][1]
    # The inverted predictor: "quantum" prompts are now the easy ones.
    inverted_path, inverted_sha = artifacts["inverted"]
    write_atomically(policy_path, policy_text(inverted_path, inverted_sha))
    deadline = time.monotonic() + 10
    while (after := explain(learned_mesh, HARD)).features.quality_predictor_sha256 != inverted_sha:
        assert time.monotonic() < deadline, "the classifier did not load the new artifact"
        time.sleep(0.1)
    assert after.policy_version > before.policy_version
    assert after.model == "fast-cheap"
    assert explain(learned_mesh, EASY).model == "strong"
