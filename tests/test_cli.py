from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

import typedstore as ts
from typedstore.cli import main
from typedstore.protocols import Reader, Storage
from typedstore.storage import LocalStorage, register_storage


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "typedstore", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_demo_in_a_fresh_directory(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    name = r"[0-9a-f]{32}-[0-9a-f]{8}"
    assert re.search(rf"array -> datastore:///demo/{name}\.safetensors\?codec=safetensors", out)
    assert re.search(rf"bytes -> datastore:///demo/{name}\.raw\?codec=raw", out)
    assert "runs[0].fields.outputs.model = DemoModel(" in out
    assert "runs[0].fields.outputs.log = b'epoch 1 ok\\nepoch 2 ok\\n'" in out
    assert out.rstrip().endswith("DataStoreIO values read back equal: True")
    assert (tmp_path / "typedstore.db").is_file()
    (exp_id,) = re.findall(r"persisted experiment \S+ \(([0-9a-f]{32})\)", out)
    folder = tmp_path / "typedstore.datastore" / exp_id
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 1
    # Running it again adds a second experiment; nothing clashes.
    assert run("demo", cwd=tmp_path).returncode == 0
    assert run("experiments", cwd=tmp_path).stdout.count("experiment-") == 2
    verified = run("verify", cwd=tmp_path)  # the demo's own class is known to every command
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout == "6 objects checked, 0 damaged\n"


MODELS = """
import attrs
import typedstore as ts


@attrs.define
class Model:
    weight: float


ts.registry.register_class(Model, name="models.Model")


class Legacy:
    def __init__(self, x):
        self.x = x
"""

WRITE_WITH_MODELS = """
import sys
import typedstore as ts
import models

ts.options.set("codecs.pickle.allow", ["models.Legacy"])
print(ts.DataStoreIO.serialize_write(models.Model(0.5), "m").url)
print(ts.DataStoreIO.serialize_write(models.Legacy(3), "m", codec="pickle").url)
"""


def test_verify_tells_damage_from_what_this_process_cannot_decode(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODELS)
    written = subprocess.run([sys.executable, "-c", WRITE_WITH_MODELS], cwd=tmp_path,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert written.returncode == 0, written.stderr
    bare = run("verify", cwd=tmp_path)
    assert bare.returncode == 0, bare.stdout
    lines = bare.stdout.splitlines()
    assert sorted(line.split()[:3] for line in lines[:2]) == [["NOT", "DECODABLE", "HERE"]] * 2
    assert "models.Model" in bare.stdout
    assert "models.Legacy" in bare.stdout
    assert lines[2:] == [
        "2 objects checked, 0 damaged",
        "2 not decodable under this process's registry and options: --import the module "
        "that registers their classes, or --allow-pickle them",
    ]
    told = run("--import", "models", "--allow-pickle", "models.Legacy", "verify", cwd=tmp_path)
    assert (told.returncode, told.stdout) == (0, "2 objects checked, 0 damaged\n")
    # Damage is still damage: a byte of the pickle flipped.
    (path,) = (p for p in (tmp_path / "typedstore.datastore" / "m").iterdir()
               if p.read_bytes().startswith(b"\x80"))  # fmt: skip
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    damaged = run("--import", "models", "--allow-pickle", "models.Legacy", "verify", cwd=tmp_path)
    assert damaged.returncode == 1
    assert damaged.stdout.startswith("DAMAGED ")


def test_global_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--import", "no_such_module_here", "codecs"]) == 1
    assert "--import no_such_module_here: ModuleNotFoundError" in capsys.readouterr().err
    for bad in ("novalue", "=x", "a..b=1"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--storage-option", bad, "codecs"])
        assert exit_info.value.code == 2
        assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.fixture
def cli_store(tmp_path: Path) -> list[str]:
    return ["--datastore", str(tmp_path / "s"), "--database", f"sqlite:///{tmp_path / 'db'}"]


def test_put_get_info_ls_rm(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", array)
    # Tensor names, their order and user metadata are the file's own.
    tensors: dict[str, np.ndarray[Any, Any]] = {"w": array, "b": np.ones(2)}
    safetensors.numpy.save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    (tmp_path / "notes.txt").write_bytes(b"hello")

    assert main([*cli_store, "put", str(tmp_path / "a.npy"), "--prefix", "up"]) == 0
    npy_url = capsys.readouterr().out.strip()
    assert npy_url.endswith("?codec=npy")
    assert main([*cli_store, "put", str(tmp_path / "m.safetensors"), "--prefix", "up"]) == 0
    st_url = capsys.readouterr().out.strip()
    assert main([*cli_store, "put", str(tmp_path / "notes.txt"), "--prefix", "up"]) == 0
    raw_url = capsys.readouterr().out.strip()
    assert raw_url.endswith("?codec=raw")
    assert main([*cli_store, "put", str(tmp_path / "a.npy"), "--codec", "safetensors"]) == 0
    assert capsys.readouterr().out.strip().endswith("?codec=safetensors")

    with ts.options.ctx({"datastore.url": str(tmp_path / "s")}):
        assert np.array_equal(ts.DataStoreIO(npy_url).read_deserialize(np.ndarray), array)
        both = ts.DataStoreIO(st_url).read_deserialize(dict)
        assert sorted(both) == ["b", "w"]
        assert ts.DataStoreIO(raw_url).read() == b"hello"

    # Put and got back byte for byte.
    for url, name in ((npy_url, "a.npy"), (st_url, "m.safetensors")):
        assert main([*cli_store, "get", url, "-o", str(tmp_path / f"out-{name}")]) == 0
        assert (tmp_path / f"out-{name}").read_bytes() == (tmp_path / name).read_bytes()

    assert main([*cli_store, "info", st_url]) == 0
    info = capsys.readouterr().out
    assert "codec:     safetensors" in info
    assert re.search(r"^w\s+<f4\s+\[3, 4\]\s+48", info, re.MULTILINE)

    assert main([*cli_store, "ls", "up"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["REFERENCE", "SIZE", "CODEC", "FROM"]
    # What ls prints, get and info take as it is; a bare key works too.
    assert {line.split()[0] for line in listing[1:]} == {npy_url, st_url, raw_url}
    assert all(line.split()[2] == "name" for line in listing[1:])
    # -q: the references alone, for a script to hand on.
    assert main([*cli_store, "ls", "-q", "up"]) == 0
    assert capsys.readouterr().out.splitlines() == [line.split()[0] for line in listing[1:]]
    for url in (raw_url, ts.Reference.parse(raw_url).key):
        assert main([*cli_store, "get", url]) == 0
        assert capsys.readouterr().out == "hello"
        assert main([*cli_store, "info", url]) == 0
        assert f"reference: {raw_url}" in capsys.readouterr().out
    assert main([*cli_store, "info", ts.Reference.parse(st_url).key]) == 0
    assert "codec:     safetensors" in capsys.readouterr().out

    assert main([*cli_store, "rm", raw_url]) == 0
    assert f"removed 1 object under {ts.Reference.parse(raw_url).key}" in capsys.readouterr().out
    assert main([*cli_store, "rm", "up"]) == 0
    assert "removed 2 objects under up" in capsys.readouterr().out
    assert main([*cli_store, "ls", "up"]) == 0
    assert "no objects" in capsys.readouterr().out


def test_info_of_a_datastore_names_each_entry_codec(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with ts.options.ctx({"datastore.url": str(tmp_path / "s")}):
        url = ts.DataStore(w=np.ones(2, np.float32), note="hi").to_url("p")
    assert main([*cli_store, "info", url]) == 0
    info = capsys.readouterr().out
    assert re.search(r"^w\s+<f4\s+\[2\]\s+8\s+safetensors$", info, re.MULTILINE)
    assert re.search(r"^note\s+\|u1\s+\[4\]\s+4\s+json$", info, re.MULTILINE)
    # A damaged entry table: the header is still shown, and the damage named.
    path = tmp_path / "s" / ts.Reference.parse(url).key
    data = path.read_bytes()
    path.write_bytes(data.replace(b'\\"index\\":[0,1]', b'\\"index\\":[0,7]'))
    assert main([*cli_store, "info", url]) == 0
    info = capsys.readouterr().out
    assert "entries:   unreadable (datastore: the entry table's index names a codec" in info
    assert re.search(r"^w\s+<f4\s+\[2\]\s+8\s*$", info, re.MULTILINE)


def test_get_to_stdout(tmp_path: Path, cli_store: list[str]) -> None:
    with ts.options.ctx({"datastore.url": str(tmp_path / "s")}):
        url = ts.DataStoreIO.write(b"\x00binary\xff", "p").url
    result = subprocess.run(
        [sys.executable, "-m", "typedstore", *cli_store, "get", url],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == b"\x00binary\xff"


def test_experiments_and_show(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cli_store, "experiments"]) == 0
    assert "no experiments" in capsys.readouterr().out
    with ts.options.ctx(
        {"datastore.url": str(tmp_path / "s"), "database.url": f"sqlite:///{tmp_path / 'db'}"}
    ):
        exp = ts.create_experiment("trial")
        exp.fields.lr = 0.1
        with exp.run() as r:
            r.fields.data = ts.DataStore(w=np.zeros(3))
        exp.persist()
    assert main([*cli_store, "experiments"]) == 0
    assert re.search(rf"^{exp.id}\s+trial\s+1\s", capsys.readouterr().out, re.MULTILINE)
    assert main([*cli_store, "show", "trial"]) == 0
    shown = capsys.readouterr().out
    assert "fields.lr = 0.1" in shown
    assert f"fields.data = DataStore[w] -> datastore:///{exp.id}/" in shown


def test_codecs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codecs"]) == 0
    out = capsys.readouterr().out
    for name in ("raw", "safetensors", "npy", "json", "tree", "datastore", "pickle"):
        version = ts.registry.get(name).version
        assert re.search(rf"^{name}\s+{version}\s+-?\d+\s+built-in", out, re.MULTILINE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "not-a-key"], "no object under key 'not-a-key'"),
        (["info", "datastore://host/p/k?codec=raw"], "datastore:///"),
        (["info", "../x"], "'..'"),
        (["get", "datastore:///p/missing?codec=raw"], "no object under key 'p/missing'"),
        (["show", "nope"], "no experiment"),
        (["rm", "../x"], "refusing to delete"),
        (["put", "/nonexistent/file"], "No such file"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(
    tmp_path: Path, cli_store: list[str], args: list[str], message: str
) -> None:
    result = run(*cli_store, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("typedstore: error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path: Path, cli_store: list[str]) -> None:
    result = run(*cli_store, "--debug", "show", "nope", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ExperimentNotFoundError" in result.stderr


@pytest.mark.parametrize("args", [[], ["bogus"], ["put"], ["put", "f", "--codec", "Bad Name"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert run(*args, cwd=tmp_path).returncode == 2


# --- commands that could harm the store or report false success ------------------------


def stored(tmp_path: Path, data: bytes, **options: str) -> tuple[str, Path]:
    with ts.options.ctx({"datastore.url": str(tmp_path / "s"), **options}):
        url = ts.DataStoreIO.write(data, "p").url
    return url, tmp_path / "s" / ts.Reference.parse(url).key


def test_get_never_writes_into_the_store(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = stored(tmp_path, b"precious")
    (tmp_path / "link").symlink_to(path)
    (tmp_path / "hard").hardlink_to(path)
    for output in (path, tmp_path / "link", tmp_path / "s" / "p" / "new"):
        assert main([*cli_store, "get", url, "-o", str(output)]) == 1
        assert "inside the store" in capsys.readouterr().err
    assert main([*cli_store, "get", url, "-o", str(tmp_path / "hard")]) == 0
    assert path.read_bytes() == b"precious"
    assert (tmp_path / "hard").read_bytes() == b"precious"
    assert not (tmp_path / "s" / "p" / "new").exists()


def test_get_checks_the_sha256_of_its_reference(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = stored(tmp_path, b"original", **{"datastore.checksum": "sha256"})
    assert "sha256=" in url
    path.write_bytes(b"replaced")
    assert main([*cli_store, "get", url]) == 1
    captured = capsys.readouterr()
    assert "do not match their sha256" in captured.err
    assert captured.out == ""
    # Into a file: checked as it is written, and the target is left as it was.
    (tmp_path / "out").write_bytes(b"before")
    assert main([*cli_store, "get", url, "-o", str(tmp_path / "out")]) == 1
    assert "do not match their sha256" in capsys.readouterr().err
    assert (tmp_path / "out").read_bytes() == b"before"
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
    path.write_bytes(b"original")
    assert main([*cli_store, "get", url, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out").read_bytes() == b"original"


def test_copy_skips_identical_objects_and_refuses_different_ones(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "s", tmp_path / "t"
    _, first = stored(tmp_path, b"one")
    _, second = stored(tmp_path, b"two")
    assert main(["copy", str(source), str(target)]) == 0
    assert "copied 2 objects (6 bytes)" in capsys.readouterr().out
    assert main(["copy", str(source), str(target)]) == 0
    assert "copied 0 objects (0 bytes)" in capsys.readouterr().out
    changed = target / second.relative_to(source)
    changed.write_bytes(b"TWO")
    assert main(["copy", str(source), str(target)]) == 1
    captured = capsys.readouterr()
    assert f"{second.relative_to(source).as_posix()} differs" in captured.err
    assert changed.read_bytes() == b"TWO"
    assert (target / first.relative_to(source)).read_bytes() == b"one"


#: Keys whose streamed writes a "committed://" storage finished.
COMMITTED: list[str] = []


class CommitRecording(LocalStorage):
    """A local storage that records each object a streamed write committed."""

    def write_from(self, key: str, reader: Reader, size: int) -> int:
        written = super().write_from(key, reader, size)
        COMMITTED.append(key)
        return written


def commit_recording(url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> Storage:
    return CommitRecording(url.removeprefix("committed://"), fsync=fsync)


@pytest.mark.parametrize("target", ["local", "memory", "committed"])
def test_copy_leaves_damaged_objects_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    # A local target streams each object in; a memory one takes it whole.
    good, _ = stored(tmp_path, b"good")
    damaged = [stored(tmp_path, data)[1] for data in (b"small", b"large" * (1 << 20))]
    for path in damaged:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(data)
    dest = {
        "local": str(tmp_path / "t"),
        "memory": f"memory://copy-{tmp_path.name}",
        "committed": f"committed://{tmp_path / 't'}",
    }[target]
    register_storage("committed", commit_recording, replace=True)
    COMMITTED.clear()
    assert main(["copy", str(tmp_path / "s"), dest]) == 1
    captured = capsys.readouterr()
    assert "copied 1 objects (4 bytes)" in captured.out
    for path in damaged:
        key = path.relative_to(tmp_path / "s").as_posix()
        assert f"not copied: {key}: the stored bytes do not match their crc32c" in captured.err
    copies = list(ts.storage.storage_for_url(dest).list())
    assert copies == [ts.Reference.parse(good).key]
    if target == "committed":
        # The damage is found before a streamed write commits, not removed after.
        assert copies == COMMITTED


def test_what_is_no_object_is_reported_and_skipped(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    stored(tmp_path, b"one")
    (tmp_path / "outside").write_bytes(b"secret")
    (tmp_path / "s" / "p" / "link").symlink_to(tmp_path / "outside")
    os.mkfifo(tmp_path / "s" / "p" / "pipe")
    for args in (["ls"], ["verify"], ["copy", str(tmp_path / "s"), str(tmp_path / "t")]):
        assert main([*cli_store, *args]) == 0, args
        captured = capsys.readouterr()
        assert "skipped p/link: not a regular file" in captured.err
        assert "skipped p/pipe: not a regular file" in captured.err
        assert "DAMAGED" not in captured.out
    assert sorted(p.name for p in (tmp_path / "t" / "p").iterdir()) == [
        (tmp_path / "s" / "p").glob("[0-9a-f]*").__next__().name
    ]


def test_put_reads_regular_files_only(tmp_path: Path, cli_store: list[str]) -> None:
    os.mkfifo(tmp_path / "pipe")
    for source in (str(tmp_path / "pipe"), "/dev/zero"):
        # A child: a pipe without a writer would block a wrong implementation for ever.
        result = subprocess.run(
            [sys.executable, "-m", "typedstore", *cli_store, "put", source],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert "is not a regular file" in result.stderr


def test_put_refuses_a_file_its_name_promises_falsely(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fake.safetensors").write_bytes(b"not a safetensors file")
    assert main([*cli_store, "put", str(tmp_path / "fake.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "fake.safetensors is named like a safetensors file but is not one" in err
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file()]  # nothing stored


def test_show_names_a_damaged_field_in_one_line(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import base64
    import json

    def set_fields(fields: dict[str, object]) -> None:
        with ts.database.transaction() as conn:
            conn.execute("UPDATE experiments SET fields = :f", {"f": json.dumps(fields)})
        ts.database.close_all()

    with ts.options.ctx({"datastore.url": str(tmp_path / "s"), "database.url": cli_store[3]}):
        experiment = ts.create_experiment("crafted")
        experiment.fields.a = 1
        experiment.fields.b = 2
        experiment.persist()
        deep = b"\x80\x05" + b"]" * 100_000 + b"a" * 99_999 + b"."  # lists 100,000 deep
        b = {"$codec": "pickle", "$base64": base64.b64encode(deep).decode()}
        set_fields({"a": {"$codec": "json", "$base64": "W1s="}, "b": b})
        assert main([*cli_store, "show", "crafted"]) == 0
        out = capsys.readouterr().out
        unreadable = [line for line in out.splitlines() if "UNREADABLE" in line]
        assert len(unreadable) == 1
        assert unreadable[0].startswith("  fields.a = UNREADABLE: codec 'json': malformed data")
        assert unreadable[0].endswith("field 'a' of experiment 'crafted'")
        assert "  fields.b = <list nested too deeply to show>" in out
        set_fields({"a": 1, "b": b})
        assert main([*cli_store, "show", "crafted"]) == 0
        assert "fields.b = <list nested too deeply to show>" in capsys.readouterr().out


def test_get_into_a_pipe_or_a_symlinked_file(tmp_path: Path, cli_store: list[str]) -> None:
    url, _ = stored(tmp_path, b"payload")
    (tmp_path / "real").write_bytes(b"old")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert main([*cli_store, "get", url, "-o", str(tmp_path / "alias")]) == 0
    assert (tmp_path / "alias").is_symlink()
    assert (tmp_path / "real").read_bytes() == b"payload"
    result = subprocess.run(
        [sys.executable, "-m", "typedstore", *cli_store, "get", url, "-o", "/dev/stdout"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"payload"


def test_version_usage_errors_and_nothing_to_copy(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.strip() == f"typedstore {ts.__version__}"
    with pytest.raises(SystemExit) as usage:
        main([*cli_store, "gc", "--older-than", "-5"])
    assert usage.value.code == 2
    assert "expected 0 seconds or more, got '-5'" in capsys.readouterr().err
    missing, target = tmp_path / "missing", tmp_path / "target"
    assert main([*cli_store, "copy", str(missing), str(target)]) == 1
    assert "no objects to copy in" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_get_quietly(tmp_path: Path, cli_store: list[str]) -> None:
    with ts.options.ctx({"datastore.url": str(tmp_path / "s")}):
        url = ts.DataStoreIO.write(os.urandom(24 << 20), "big").url
    with subprocess.Popen(
        [sys.executable, "-m", "typedstore", *cli_store, "get", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        assert len(child.stdout.read(10)) == 10  # the child is writing: then the reader goes
        child.stdout.close()
        assert child.wait(timeout=60) == 141
        assert child.stderr.read() == b""


def test_json_output_for_scripts(
    tmp_path: Path, cli_store: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    with ts.options.ctx({"datastore.url": str(tmp_path / "s"), "database.url": cli_store[3]}):
        experiment = ts.create_experiment("scripted")
        experiment.fields.lr = 0.5
        with experiment.run() as run_:
            run_.fields.accuracy = 0.9
            run_.fields.outputs = ts.DataStore(w=np.ones(3, np.float32))
            run_.fields.pair = (1, 2)
        experiment.persist()
        loose = ts.DataStoreIO.write(b"loose", "mine").url
    ts.database.close_all()

    def output(*args: str) -> Any:
        assert main([*cli_store, *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    listed = output("ls")
    assert [(o["codec"], o["codec_from"]) for o in listed] == [
        ("datastore", "experiment"), ("raw", "name")
    ]
    assert listed[1] == {"reference": loose, "key": ts.Reference.parse(loose).key,
                         "codec": "raw", "size": 5, "codec_from": "name"}  # fmt: skip
    info = output("info", listed[0]["reference"])
    assert info["codec"] == "datastore"
    assert (info["tensors"][0]["dtype"], info["tensors"][0]["shape"]) == ("<f4", [3])
    (stored,) = output("experiments")
    assert (stored["name"], stored["runs"]) == ("scripted", 1)
    (found,) = output("experiments", "--where", "accuracy > 0.8")
    assert found["experiment"] == "scripted"
    assert found["fields"]["accuracy"] == 0.9
    assert found["fields"]["outputs"]["datastore"] == listed[0]["reference"]
    assert found["fields"]["pair"]["type"] == "builtins.tuple"
    shown = output("show", "scripted")
    assert shown["fields"] == {"lr": 0.5}
    assert shown["runs"][0]["fields"]["outputs"]["keys"] == ["w"]
    assert output("verify") == {"checked": 2, "damaged": [], "not_decodable_here": []}


COPY_MEMORY = """
import sys, tracemalloc
import numpy as np
import typedstore as ts
from typedstore.cli import main

with ts.options.ctx({"datastore.url": sys.argv[1]}):
    ts.DataStoreIO.serialize_write(np.ones(8 * 2**20), "big")  # 64 MiB
tracemalloc.start()
assert main(["--quiet", "copy", sys.argv[1], sys.argv[2]]) == 0
print(tracemalloc.get_traced_memory()[1])
"""


def test_copy_streams_objects_with_bounded_memory(tmp_path: Path) -> None:
    from typedstore.policy import PART

    result = subprocess.run(
        [sys.executable, "-c", COPY_MEMORY, str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) < 2 * PART  # one part, never the 64 MiB object
    with ts.options.ctx({"datastore.url": str(tmp_path / "b")}):
        (key,) = ts.default_store().storage.list()
        assert ts.default_store().storage.size(key) > 64 * 2**20
