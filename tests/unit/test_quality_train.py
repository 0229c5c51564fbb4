"""The learned quality predictor: a planted signal is learned, the artifact round-trips and is checked, bad input fails."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import sys
from importlib import resources
from pathlib import Path

import pytest
from routemesh.classifier.features import classify
from routemesh.quality.artifact import ArtifactError, ThresholdCurve, artifact_bytes, load_artifact, save_artifact
from routemesh.quality.features import (
    DENSE_NAMES,
    FeatureError,
    FeatureSettings,
    NgramHasher,
    dense_features,
    prompt_format,
)
from routemesh.quality.outcomes import OutcomesError, in_validation
from routemesh.quality.predictor import QualityPredictor
from routemesh.quality.train import TrainingError, TrainingResult, TrainingSettings, threshold_curve, train_file

from tests.planted import planted_csv
from tests.planted import planted_prompt as _prompt

SHIPPED = Path(__file__).resolve().parents[2] / "services/routemesh/quality/data/predictor.json.gz"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingResult, Path]:
    folder = tmp_path_factory.mktemp("quality")
    artifact = folder / "predictor.json.gz"
    return train_file(planted_csv(folder / "planted.csv"), artifact, seed=3), artifact


def test_a_planted_word_is_learned_for_unseen_prompts(trained):
    predictor = QualityPredictor(trained[0].artifact)
    rng = random.Random(99)
    with_word = [predictor.predict(_prompt(rng, True)) for _ in range(20)]
    without = [predictor.predict(_prompt(rng, False)) for _ in range(20)]
    for p in with_word:
        assert p["strong"] - p["weak"] > 0.3
    mean_gap = sum(p["strong"] - p["weak"] for p in with_word) / 20 - sum(p["strong"] - p["weak"] for p in without) / 20
    assert mean_gap > 0.5
    assert max(p["weak"] for p in with_word) < min(p["weak"] for p in without)


def test_training_records_where_it_came_from_and_what_it_found(trained):
    result, path = trained
    artifact = result.artifact
    assert artifact.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tuple(artifact.models) == ("weak", "strong")
    assert artifact.training["seed"] == 3 and artifact.training["models"] == ["weak", "strong"]
    assert artifact.training["rows"] == 300
    assert artifact.training["validation_rows"] == len(result.validation) > 0
    assert artifact.training["validation"]["weak"]["auc"] > 0.9
    assert len(artifact.data_sha256) == 64
    curve = artifact.curve("weak", "strong")
    assert list(curve.thresholds) == sorted(curve.thresholds, reverse=True)
    assert list(curve.stronger_shares) == sorted(curve.stronger_shares)


def test_artifact_round_trip_gives_the_same_predictions_and_bytes(trained, tmp_path):
    result, path = trained
    loaded = load_artifact(path, expected_sha256=result.artifact.sha256)
    assert loaded == result.artifact
    assert artifact_bytes(loaded) == path.read_bytes()
    again = tmp_path / "again.json.gz"
    assert save_artifact(loaded, again) == result.artifact.sha256
    before, after = QualityPredictor(result.artifact), QualityPredictor.from_artifact(again, result.artifact.sha256)
    for prompt in result.validation.prompts[:10] + ("", "What is a quantum of action?"):
        assert before.predict(prompt) == after.predict(prompt)


def test_predictions_are_the_regression_over_the_training_features(trained):
    artifact = trained[0].artifact
    predictor, hasher = QualityPredictor(artifact), NgramHasher(artifact.features)
    for prompt in ("Explain the quantum river bridge?", "Q: 12 apples at $3.\nA. 36\nB. 4\nC. 15\nD. 9\nAnswer:"):
        view = hasher.view(prompt)
        vector, dense = hasher.vector(view), dense_features(prompt, classify([("user", prompt)]), view)
        predicted = predictor.predict(prompt)
        for name, model in artifact.models.items():
            weights = dict(zip(model.buckets, model.weights, strict=True))
            logit = model.bias + sum(weights.get(c, 0.0) * v for c, v in vector.items())
            logit += sum(w * x for w, x in zip(model.dense, dense, strict=True))
            assert predicted[name] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)


def test_the_same_seed_gives_the_same_artifact_bytes(trained, tmp_path):
    data = planted_csv(tmp_path / "planted.csv")
    again = train_file(data, tmp_path / "again.json.gz", seed=3)
    assert again.artifact.sha256 == trained[0].artifact.sha256


def test_a_changed_byte_or_another_digest_is_rejected(trained, tmp_path):
    result, path = trained
    with pytest.raises(ArtifactError, match="sha256 is"):
        load_artifact(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed = tmp_path / "changed.json.gz"
    changed.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 is"):
        load_artifact(changed, expected_sha256=result.artifact.sha256)
    with pytest.raises(ArtifactError, match="not a gzip-compressed file"):
        load_artifact(changed)


def _document(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def _written(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "edited.json.gz"
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(version=2), "artifact version 2"),
    (lambda d: d.update(format="something-else"), "not a routemesh-quality-predictor artifact"),
    (lambda d: d["features"].update(bucket_bits=40), "bucket_bits must be 8..24"),
    (lambda d: d["features"].update(colour="blue"), "unknown feature settings: colour"),
    (lambda d: d.update(dense_names=d["dense_names"][:-1]), "other dense features"),
    (lambda d: d["models"][0]["buckets"].append(1 << 30), "ascending integers below"),
    (lambda d: d["models"][0]["weights"].pop(), "buckets, .* weights"),
    (lambda d: d["models"][1].update(bias="high"), "bias must be a list of finite numbers"),
    (lambda d: d["models"][1].update(name="weak"), "model names repeat"),
    (lambda d: d["calibration"][0].update(stronger="gpt-9"), "must name two of the artifact's models"),
    (lambda d: d.pop("models"), "no models"),
])
def test_a_malformed_artifact_says_what_is_wrong(trained, tmp_path, edit, message):
    document = _document(trained[1])
    edit(document)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(_written(tmp_path, document))


def test_a_missing_or_foreign_file_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read it"):
        load_artifact(tmp_path / "nowhere.json.gz")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    with pytest.raises(ArtifactError, match="not a gzip-compressed file"):
        load_artifact(plain)
    not_json = tmp_path / "text.gz"
    not_json.write_bytes(gzip.compress(b"weights: yes"))
    with pytest.raises(ArtifactError, match="not JSON"):
        load_artifact(not_json)


def test_bad_training_data_gives_clear_errors(tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("prompt,source\nhello,x\n")
    with pytest.raises(OutcomesError, match="no outcome columns"):
        train_file(missing, tmp_path / "out.json.gz")
    constant = tmp_path / "constant.csv"
    constant.write_text("prompt,weak_correct\n" + "".join(f"prompt number {i},1\n" for i in range(200)))
    with pytest.raises(TrainingError, match="every training outcome is 1"):
        train_file(constant, tmp_path / "out.json.gz")
    prompts = [f"prompt number {i}" for i in range(200)]
    wrong = [p for p in prompts if not in_validation(p)][:3]
    rare = tmp_path / "rare.csv"
    rare.write_text("prompt,weak_correct\n" + "".join(f"{p},{int(p not in wrong)}\n" for p in prompts))
    with pytest.raises(TrainingError, match="3 of 0; cross-validation needs at least 5 of each"):
        train_file(rare, tmp_path / "out.json.gz")
    few = tmp_path / "few.csv"
    few.write_text("prompt,weak_correct\n" + "".join(f"p{i},{i % 2}\n" for i in range(6)))
    with pytest.raises(TrainingError, match="cross-validation needs at least"):
        train_file(few, tmp_path / "out.json.gz")
    assert not (tmp_path / "out.json.gz").exists()


def test_no_validation_rows_is_a_training_error(tmp_path):
    prompts = [f"prompt number {i}" for i in range(400) if not in_validation(f"prompt number {i}")][:40]
    data = tmp_path / "train-only.csv"
    data.write_text("prompt,weak_correct\n" + "".join(f"{p},{i % 2}\n" for i, p in enumerate(prompts)))
    with pytest.raises(TrainingError, match="no row fell into the validation split"):
        train_file(data, tmp_path / "out.json.gz")


def test_training_without_scikit_learn_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(TrainingError, match=r"pip install -e '\.\[train\]'"):
        train_file(planted_csv(tmp_path / "planted.csv"), tmp_path / "out.json.gz")


@pytest.mark.parametrize(("settings", "message"), [
    ({"bucket_bits": 4}, "bucket_bits"), ({"word_ngram_max": 3}, "word_ngram_max"),
    ({"char_ngram_min": 5, "char_ngram_max": 3}, "character n-grams"), ({"hash": "md5"}, "hash must be"),
    ({"bucket_bits": 16.5}, "bucket_bits must be a int"), ({"fold_digits": 1}, "fold_digits must be a bool"),
])
def test_bad_feature_settings_are_refused(settings, message):
    with pytest.raises(FeatureError, match=message):
        FeatureSettings(**settings)


def test_bad_training_settings_are_refused(tmp_path):
    from routemesh.quality.outcomes import load_outcomes
    from routemesh.quality.train import train

    table = load_outcomes(planted_csv(tmp_path / "planted.csv"))
    with pytest.raises(TrainingError, match="c_grid"):
        train(table, settings=TrainingSettings(c_grid=()))


def test_hashing_is_stable_across_processes_and_versions():
    # These buckets are in every artifact: if they move, shipped artifacts silently predict garbage.
    hasher = NgramHasher(FeatureSettings())
    word_hash, buckets = hasher.word_terms("quantum")
    assert word_hash == 0xC1841684 and buckets == (5764, 49284, 8828, 23346, 5770, 35181, 52406)
    assert hasher.word_terms("12") == hasher.word_terms("37")
    assert hasher.pair_bucket(1, 2) != hasher.pair_bucket(2, 1)


def test_a_prompt_is_read_in_a_bounded_window():
    hasher = NgramHasher(FeatureSettings(head_chars=20, tail_chars=10))
    view = hasher.view("Alpha " * 100 + "omega")
    assert view.words[-1] == "omega" and len(view.words) <= 6
    assert prompt_format("Pick one:\nA. yes\nB. no\nC. maybe") == 1
    assert prompt_format("Tom has 3 apples. How many?") == 0
    assert len(dense_features("x", classify([("user", "x")]), hasher.view("x"))) == len(DENSE_NAMES)


def test_threshold_curve_on_a_known_answer():
    # Prompts 0..3 by falling score; the stronger model rescues prompts 0 and 2 only, so keeping all of
    # its quality takes the first three.
    scores, weaker, stronger = [0.9, 0.5, 0.3, -0.2], [0, 1, 0, 1], [1, 1, 1, 1]
    thresholds, shares = threshold_curve(scores, weaker, stronger, targets=(0.5, 0.75, 1.0))
    assert shares == [0.0, 0.25, 0.75]
    assert thresholds == [1.0, pytest.approx(0.7), pytest.approx(0.05)]


def test_a_target_maps_to_the_next_calibrated_target_up():
    curve = ThresholdCurve("weak", "strong", targets=(0.9, 0.95, 1.0), thresholds=(0.3, 0.1, -1.0),
                           stronger_shares=(0.2, 0.4, 1.0))
    assert curve.threshold(0.95) == 0.1
    assert curve.threshold(0.93) == 0.1
    assert curve.threshold(0.5) == 0.3
    with pytest.raises(ValueError, match="above the calibrated grid"):
        curve.threshold(1.01)


def test_the_shipped_predictor_loads_and_scores_without_training_libraries():
    artifact = load_artifact(SHIPPED)
    assert tuple(artifact.models) == ("weak", "strong")
    predictor = QualityPredictor(artifact)
    easy = predictor.predict("What is the capital of France?\nA. Paris\nB. Rome\nC. Berlin\nD. Madrid\nAnswer:")
    assert all(0.0 < p < 1.0 for p in easy.values())
    assert 0.8 <= artifact.curve("weak", "strong").stronger_shares[-1] <= 1.0


def test_logit_offsets_correct_one_models_calibration_without_touching_the_predictor():
    with resources.as_file(resources.files("routemesh.quality").joinpath("data/predictor.json.gz")) as shipped:
        predictor = QualityPredictor.from_artifact(shipped)
    prompt = "What is the capital of France?\nA. Paris\nB. Rome\nC. Berlin\nD. Madrid\nAnswer:"
    before = predictor.predict(prompt)
    corrected = predictor.with_offsets({"weak": 1.0})
    after = corrected.predict(prompt)
    assert after["strong"] == pytest.approx(before["strong"])
    logit = math.log(before["weak"] / (1 - before["weak"]))
    assert after["weak"] == pytest.approx(1 / (1 + math.exp(-(logit + 1.0))), rel=1e-6)
    assert predictor.predict(prompt) == before and corrected.offsets == {"weak": 1.0, "strong": 0.0}
    with pytest.raises(ValueError, match="no prediction for nope"):
        predictor.with_offsets({"nope": 0.5})
    with pytest.raises(ValueError, match="finite"):
        predictor.with_offsets({"weak": math.inf})
