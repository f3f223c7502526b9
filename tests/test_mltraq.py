"""Moving a real mltraq store into typedstore."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import typedstore as ts
from typedstore.cli import main
from typedstore.errors import DecodeError, UnsafeDataError

pytest.importorskip("mltraq", reason="the mltraq importer is checked against mltraq itself")
pd = pytest.importorskip("pandas")

MLTRAQ_STORE = """
import uuid
import numpy as np
import pandas as pd
import mltraq

mltraq.options().set("tqdm.disable", True)
session = mltraq.create_session("sqlite:///mltraq.db")
experiment = session.create_experiment("iris")
experiment.fields.dataset = "iris"
experiment.fields.split = {"train": 0.8, "seed": 7}
experiment.fields.tag = uuid.UUID(int=5)
experiment.fields.data = mltraq.DataStore(features=np.arange(6.0).reshape(2, 3),
                                          frame=pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
experiment.add_runs(i=range(3))
for run in experiment.runs.values():
    run.fields.accuracy = 0.5 + run.params.i / 10
    run.fields.model = mltraq.DataStore(weights=np.full(4, run.params.i, np.float32), note="ok")
    run.fields.curve = np.linspace(0, 1, 5) * run.params.i
experiment.persist()
print(mltraq.DataStoreIO.serialize_write({"loose": np.ones(2)}, "mine").url)
print(mltraq.DataStoreIO.serialize_write([1, 2, 3], "mine").url)
"""


@pytest.fixture
def old(tmp_path: Path) -> tuple[Path, list[str]]:
    """An mltraq store written by mltraq itself: its database, datastore, loose URLs."""
    folder = tmp_path / "old"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-c", MLTRAQ_STORE], cwd=folder,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder, result.stdout.split()


def test_experiments_and_datastores_move_over(
    old: tuple[Path, list[str]], store: Path
) -> None:
    folder, loose = old
    before = sorted(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    report = ts.mltraq.import_mltraq(f"sqlite:///{folder / 'mltraq.db'}",
                                     folder / "mltraq.datastore")  # fmt: skip
    assert report.experiments == ("iris",)
    assert report.skipped == ()
    iris = ts.load_experiment("iris")
    assert iris.fields.dataset == "iris"
    assert iris.fields.split == {"train": 0.8, "seed": 7}
    assert iris.fields.tag == uuid.UUID(int=5)
    assert np.array_equal(iris.fields.data.features, np.arange(6.0).reshape(2, 3))
    assert iris.fields.data.frame.equals(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert sorted(run.fields.accuracy for run in iris.runs) == [0.5, 0.6, 0.7]
    for run in iris.runs:
        i = round((run.fields.accuracy - 0.5) * 10)
        assert run.fields.model.weights.dtype == np.float32
        assert np.array_equal(run.fields.model.weights, np.full(4, i, np.float32))
        assert run.fields.model.note == "ok"
        assert np.array_equal(run.fields.curve, np.linspace(0, 1, 5) * i)
    # The loose objects keep their keys; the experiment's DataStores moved with it.
    assert sorted(report.objects) == sorted(loose)
    values = [ts.DataStoreIO(report.objects[url]).read_deserialize() for url in loose]
    assert np.array_equal(values[0].loose, np.ones(2))
    assert values[1] == [1, 2, 3]
    # The old store is left as it was.
    assert sorted(p.read_bytes() for p in folder.rglob("*") if p.is_file()) == before


def test_the_command_line_moves_a_store(
    old: tuple[Path, list[str]], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = old
    args = ["import-mltraq", f"sqlite:///{folder / 'mltraq.db'}", str(folder / "mltraq.datastore")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "imported experiment iris" in out
    assert "2 DataStore files" in out
    assert main(args) == 1  # already there: if_exists is "fail" unless --replace
    assert "already stored" in capsys.readouterr().err
    assert main([*args, "--replace"]) == 0


def test_datapak_that_asks_for_code_is_refused() -> None:
    import argparse
    import pickle

    hostile = pickle.dumps(argparse.Namespace(a=1), protocol=5)  # not DataPak's plain data
    with pytest.raises(UnsafeDataError):
        ts.mltraq.read_datapak(hostile)
    tagged = pickle.dumps({"DATAPAK-0": "os.system", "value": "true"}, protocol=5)
    with pytest.raises(DecodeError, match="not read"):
        ts.mltraq.read_datapak(tagged)
    outside = pickle.dumps({"DATAPAK-0": "mltraq.DataStore-0", "value": "file:///../x"})
    with pytest.raises(ts.errors.InvalidKeyError):
        ts.mltraq.read_datapak(outside, "/tmp")
    bomb = b"C01" + __import__("zlib").compress(b"\0" * 10_000_000)
    with pytest.raises(DecodeError, match="inflates"):
        ts.mltraq.read_datapak(bomb)
