"""`routemesh router eval|train` as a user runs them: figures printed, bad input one clear line and exit 2."""

from __future__ import annotations

import json

from routemesh.cli import main

FIXTURE = "prompt,source,weak_correct,strong_correct\n" + "".join(
    f"{'a long and hard question ' * (i % 7)}q{i},bench/x,{int(i % 3 == 0)},{int(i % 5 != 0)}\n" for i in range(300))


def test_eval_prints_the_baselines_and_writes_json_and_a_plot(tmp_path, capsys):
    data = tmp_path / "outcomes.csv"
    data.write_text(FIXTURE)
    figures, plot = tmp_path / "figures.json", tmp_path / "curves.png"
    assert main(["router", "eval", "--data", str(data), "--split", "all", "--json", str(figures),
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "weak = weak, strong = strong" in out
    for method in ("random", "length_chars", "length_tokens"):
        assert method in out
    assert json.loads(figures.read_text())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_data_and_artifacts_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,weak_correct\nhello,maybe\n")
    assert main(["router", "eval", "--data", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"routemesh router eval: {bad}: row at line 2, column weak_correct: 'maybe' is not 0 or 1")
    good = tmp_path / "good.csv"
    good.write_text(FIXTURE)
    not_an_artifact = tmp_path / "predictor.json.gz"
    not_an_artifact.write_bytes(b"not an artifact")
    assert main(["router", "eval", "--data", str(good), "--artifact", str(not_an_artifact)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("routemesh router eval: ") and "Traceback" not in err
    assert main(["router", "eval", "--data", str(good), "--weak", "nope"]) == 2
    assert "no outcome column for model 'nope'" in capsys.readouterr().err
