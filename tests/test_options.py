from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import typedstore as ts
from typedstore.errors import OptionValueError, UnknownOptionError
from typedstore.options import env_name


def test_defaults() -> None:
    assert ts.options.get("datastore.url") == "typedstore.datastore"
    assert ts.options.get("datastore.relative_path_prefix") is None
    assert ts.options.get("datastore.fsync") is False
    assert ts.options.get("codecs.pickle.allow") == ()
    assert ts.options.get("codecs.pickle.unrestricted") is False


def test_set_get_reset() -> None:
    ts.options.set("datastore.url", "/data/store")
    assert ts.options.get("datastore.url") == "/data/store"
    ts.options.reset("datastore.url")
    assert ts.options.get("datastore.url") == "typedstore.datastore"
    ts.options.set("datastore.fsync", True)
    ts.options.reset()
    assert ts.options.get("datastore.fsync") is False


def test_unknown_key_raises() -> None:
    with pytest.raises(UnknownOptionError, match=r"datastore\.urll"):
        ts.options.get("datastore.urll")
    with pytest.raises(UnknownOptionError):
        ts.options.set("nope", 1)
    with pytest.raises(KeyError), ts.options.ctx({"nope": 1}):
        pass


def test_wrong_type_raises() -> None:
    with pytest.raises(OptionValueError, match=r"datastore\.fsync"):
        ts.options.set("datastore.fsync", "yes")
    with pytest.raises(OptionValueError):
        ts.options.set("datastore.url", "")
    with pytest.raises(OptionValueError):
        ts.options.set("codecs.pickle.allow", [1])


def test_allow_accepts_a_single_pattern() -> None:
    ts.options.set("codecs.pickle.allow", "mypkg.*")
    assert ts.options.get("codecs.pickle.allow") == ("mypkg.*",)


def test_ctx_overrides_and_restores() -> None:
    ts.options.set("datastore.url", "outer")
    with ts.options.ctx({"datastore.url": "inner"}):
        assert ts.options.get("datastore.url") == "inner"
        with ts.options.ctx({"datastore.fsync": True}):
            assert ts.options.get("datastore.url") == "inner"
            assert ts.options.get("datastore.fsync") is True
        assert ts.options.get("datastore.fsync") is False
    assert ts.options.get("datastore.url") == "outer"


def test_ctx_is_invisible_to_other_threads() -> None:
    seen: list[str] = []
    inside = threading.Event()
    done = threading.Event()

    def other() -> None:
        inside.wait(5)
        seen.append(ts.options.get("datastore.url"))
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with ts.options.ctx({"datastore.url": "mine"}):
        inside.set()
        done.wait(5)
        assert ts.options.get("datastore.url") == "mine"
    thread.join()
    assert seen == ["typedstore.datastore"]


def test_ctx_is_invisible_to_other_tasks() -> None:
    async def main() -> list[str]:
        gate = asyncio.Event()

        async def a() -> str:
            with ts.options.ctx({"datastore.url": "task-a"}):
                gate.set()
                await asyncio.sleep(0.01)
                return str(ts.options.get("datastore.url"))

        async def b() -> str:
            await gate.wait()
            return str(ts.options.get("datastore.url"))

        return list(await asyncio.gather(a(), b()))

    assert asyncio.run(main()) == ["task-a", "typedstore.datastore"]


def test_keys_and_descriptions() -> None:
    assert "datastore.url" in ts.options.names()
    assert all(ts.options.describe(key) for key in ts.options.names())


def test_every_option_has_its_own_environment_variable() -> None:
    names = [env_name(key) for key in ts.options.names()]
    assert len(set(names)) == len(names)
    assert env_name("datastore.relative_path_prefix") == "TYPEDSTORE_DATASTORE_RELATIVE_PATH_PREFIX"


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("datastore.url", "s3://bucket/x", "s3://bucket/x"),
        ("database.url", "sqlite:///:memory:", "sqlite:///:memory:"),
        ("datastore.fsync", "1", True),
        ("datastore.fsync", "Yes", True),
        ("datastore.fsync", "false", False),
        ("persist.durable", "off", False),
        ("datastore.relative_path_prefix", "", None),
        ("datastore.relative_path_prefix", "runs", "runs"),
        ("datastore.relative_path_prefix", "1", "1"),
        ("datastore.checksum", "sha256", "sha256"),
        ("codecs.arrow.compression", "null", None),
        ("codecs.pickle.allow", "sklearn.*, mypkg.Model", ("sklearn.*", "mypkg.Model")),
        ("codecs.pickle.allow", '["a.*"]', ("a.*",)),
        ("datastore.storage_options", '{"anon": true}', {"anon": True}),
    ],
)
def test_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, text: str, value: object
) -> None:
    monkeypatch.setenv(env_name(key), text)
    ts.options.reset()
    assert ts.options.get(key) == value
    ts.options.set(key, ts.options.get(key))  # set and ctx still win
    with ts.options.ctx({"progress": False}):
        assert ts.options.get(key) == value
    monkeypatch.delenv(env_name(key))
    assert ts.options.get(key) == value  # read once, until reset
    ts.options.reset(key)
    assert ts.options.get(key) == ts.Options().get(key)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("datastore.fsync", "maybe"),
        ("datastore.storage_options", "[1, 2]"),
        ("datastore.checksum", "md5"),
        ("datastore.url", ""),
    ],
)
def test_a_bad_environment_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, key: str, text: str
) -> None:
    monkeypatch.setenv(env_name(key), text)
    ts.options.reset()
    with pytest.raises(ts.errors.OptionValueError, match=env_name(key)):
        ts.options.get(key)


def test_the_environment_configures_a_fresh_process(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TYPEDSTORE_DATASTORE_URL": str(tmp_path / "from-env"),
        "TYPEDSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'from-env.db'}",
    }
    code = "import typedstore as ts; print(ts.DataStoreIO.write(b'x', 'p').url)"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env" / "p").is_dir()
    cli = subprocess.run([sys.executable, "-m", "typedstore", "ls"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert ts.Reference.parse(result.stdout.strip()).key in cli.stdout
