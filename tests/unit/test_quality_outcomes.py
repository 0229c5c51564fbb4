"""Routing outcomes from CSV: N models' outcome columns, clear errors for bad files, a split that never moves."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest

from routemesh.quality.outcomes import OutcomesError, in_validation, load_outcomes, parse_outcomes, split

GOOD = "prompt,source,a_correct,b_correct,c_correct\n\"Hi, there\",mmlu/x,0,1,1\nWhat is 2+2?,gsm8k,1,1,0\n"


def test_every_outcome_column_is_a_model():
    table = parse_outcomes(GOOD)
    assert table.models == ("a", "b", "c")
    assert table.outcomes["a"] == (0, 1) and table.outcomes["c"] == (1, 0)
    assert table.prompts == ("Hi, there", "What is 2+2?")
    assert [table.benchmark(i) for i in range(len(table))] == ["mmlu", "gsm8k"]


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"),
    ("prompt,source\nhi,x\n", "no outcome columns"),
    ("text,a_correct\nhi,1\n", "no 'prompt' column"),
    ("prompt,a_correct\nhi,2\n", "line 2, column a_correct: '2' is not 0 or 1"),
    ("prompt,a_correct\nhi,yes\n", "'yes' is not 0 or 1"),
    ("prompt,a_correct\n", "no rows"),
    ("prompt,a_correct\nhi,1,extra\n", "3 fields, the header 2"),
    ("prompt,a_correct\n ,1\n", "empty prompt"),
])
def test_bad_files_say_what_is_wrong(text, says):
    with pytest.raises(OutcomesError, match=says.replace("(", r"\(").replace("+", r"\+")):
        parse_outcomes(text)


def test_files_plain_or_gzip_and_unreadable_ones(tmp_path):
    (tmp_path / "a.csv").write_text(GOOD)
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(GOOD.encode()))
    assert load_outcomes(tmp_path / "a.csv") == load_outcomes(tmp_path / "a.csv.gz")
    with pytest.raises(OutcomesError, match="cannot read"):
        load_outcomes(tmp_path / "missing.csv")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(OutcomesError, match="gzip"):
        load_outcomes(tmp_path / "bad.gz")


def test_the_validation_split_is_a_stable_fifth_of_the_shipped_data():
    path = resources.files("routemesh.quality").joinpath("data/outcomes_train.csv.gz")
    with resources.as_file(path) as shipped:
        table = load_outcomes(shipped)
    assert len(table) == 10_697 and table.models == ("weak", "strong")
    train, validation = split(table)
    assert len(train) + len(validation) == len(table)
    assert 0.18 < len(validation) / len(table) < 0.22
    assert not set(train.prompts) & set(validation.prompts)
    # The split is a property of the prompt text alone: these two never move.
    assert in_validation("What is the capital of France?") is in_validation("What is the capital of France?")
    assert sum(in_validation(f"prompt {i}") for i in range(10_000)) in range(1_900, 2_100)
