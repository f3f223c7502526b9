"""Runs found by field value in the database, and runs as a DataFrame, on both databases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import typedstore as ts
from typedstore.cli import main


@pytest.fixture
def results(tmp_path: Path, database_url: str) -> list[ts.Experiment]:
    """Two persisted experiments of runs with fields of every plain kind."""
    root = tmp_path / "store"
    ts.options.set("datastore.url", str(root))
    ts.options.set("database.url", database_url)
    experiments = []
    for name, model in (("first", "svm"), ("second", "tree")):
        experiment = ts.create_experiment(name)
        for i in range(4):
            with experiment.run() as run:
                run.fields.accuracy = (7 + i) / 10
                run.fields.epochs = 10 * i
                run.fields.model = model
                run.fields.early = i % 2 == 0
                run.fields.note = None if i == 3 else f"run {i}"
                run.fields.weights = ts.DataStore(w=np.full(2, i))
                if i == 0:
                    run.fields["odd key 'x'"] = 1
        experiment.persist()
        experiments.append(experiment)
    return experiments


def found(*conditions: object, **kwargs: object) -> list[tuple[str, int]]:
    return [(r.experiment, r.position) for r in ts.find_runs(*conditions, **kwargs)]  # type: ignore[arg-type]


def test_numbers_strings_bools_and_null(results: list[ts.Experiment]) -> None:
    assert found("accuracy > 0.85") == [("first", 2), ("first", 3), ("second", 2), ("second", 3)]
    assert found(("epochs", "<=", 10)) == [("first", 0), ("first", 1), ("second", 0), ("second", 1)]
    assert found("epochs == 20.0", "model == 'tree'") == [("second", 2)]
    assert found("model != svm") == [("second", i) for i in range(4)]
    assert found("early == true", experiment="first") == [("first", 0), ("first", 2)]
    assert found("early != true", experiment="second") == [("second", 1), ("second", 3)]
    assert found("note == null") == [("first", 3), ("second", 3)]
    assert len(found("note != null")) == 6
    assert found("note > 'run 1'") == [("first", 2), ("second", 2)]
    assert found(ts.Condition("odd key 'x'", "==", 1)) == [("first", 0), ("second", 0)]
    assert found("missing == 1") == []
    assert found("model > 1") == []  # a string is never compared with a number
    assert len(found()) == 8


def test_found_runs_carry_their_fields(results: list[ts.Experiment]) -> None:
    (run,) = ts.find_runs("epochs == 30", experiment=results[1].id)
    assert (run.experiment_id, run.id) == (results[1].id, results[1].runs[3].id)
    assert run.fields.model == "tree"
    assert np.array_equal(run.fields.weights.w, np.full(2, 3))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy", "not FIELD OP VALUE"),
        ("early > true", "== and != only"),
        ("x == [1]", "JSON scalar"),
        (" == 1", "not FIELD OP VALUE"),
    ],
)
def test_bad_conditions(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ts.Condition.parse(text)
    with pytest.raises(ValueError, match="finite"):
        ts.Condition("x", ">", float("nan"))


def test_values_are_bound_not_spliced(results: list[ts.Experiment]) -> None:
    assert found("model == \"svm' OR 1=1 --\"") == []
    assert found(ts.Condition("model') OR 1=1 --", "==", 1)) == []
    assert len(ts.list_experiments()) == 2


def test_to_pandas(results: list[ts.Experiment]) -> None:
    pytest.importorskip("pandas")
    loaded = ts.load_experiment("second")
    frame = loaded.to_pandas()
    assert list(frame.index) == [run.id for run in loaded.runs]
    assert list(frame.columns) == ["accuracy", "epochs", "model", "early", "note", "weights",
                                   "odd key 'x'"]  # fmt: skip
    assert frame["epochs"].tolist() == [0, 10, 20, 30]
    assert np.array_equal(frame["weights"].iloc[2].w, np.full(2, 2))
    by_reference = ts.load_experiment("second").to_pandas(datastores="reference")
    assert all(str(ref).startswith("datastore:///") for ref in by_reference["weights"])
    assert by_reference["weights"].tolist() == [
        run.fields.weights.reference for run in ts.load_experiment("second").runs
    ]
    assert ts.create_experiment().to_pandas().empty
    with pytest.raises(ValueError, match="datastores"):
        loaded.to_pandas(datastores="eager")  # type: ignore[arg-type]


def test_cli_where(results: list[ts.Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiments", "--where", "accuracy >= 0.9", "--where", "model == 'svm'"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["EXPERIMENT", "RUN", "ID", "FIELDS"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["first", str(i), results[0].runs[i].id] for i in (2, 3)
    ]
    assert "model='svm'" in lines[1]
    assert main(["experiments", "--where", "accuracy > 5"]) == 0
    assert capsys.readouterr().out == "no runs match\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["experiments", "--where", "accuracy"])
    assert exit_info.value.code == 2
    assert "not FIELD OP VALUE" in capsys.readouterr().err
