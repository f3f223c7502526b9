from __future__ import annotations

import asyncio
import threading

import pytest

import typedstore as ts
from typedstore.errors import OptionValueError, UnknownOptionError


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
