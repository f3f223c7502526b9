"""Options: a tree of dotted names with process-wide values and per-context overrides."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import attrs

from typedstore.errors import OptionValueError, UnknownOptionError

__all__ = ["Options", "env_name", "options"]


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _one_of(*choices: str | None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            raise TypeError(f"expected one of {', '.join(map(repr, choices))}")
        return value  # type: ignore[no-any-return]

    return check


def _mapping(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError("expected a dict with str keys, or None")
    return MappingProxyType(dict(value))


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected True or False")
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple | frozenset | set):
        raise TypeError("expected a sequence of glob patterns")
    if not all(isinstance(p, str) and p for p in value):
        raise TypeError("expected non-empty strings")
    return tuple(value)


@attrs.frozen
class _Spec:
    default: Any
    check: Callable[[Any], Any]
    doc: str


_SPECS: Mapping[str, _Spec] = MappingProxyType(
    {
        "datastore.url": _Spec(
            "typedstore.datastore",
            _str,
            "Root of the datastore: a directory path or a file:// URL "
            "(relative paths are resolved against the current directory), or memory://NAME.",
        ),
        "database.url": _Spec(
            "sqlite:///typedstore.db",
            _str,
            "Where experiments are kept: sqlite:///PATH (relative to the current directory), "
            "sqlite:////ABSOLUTE/PATH, sqlite:///:memory:, or any SQLAlchemy URL such as "
            "postgresql+psycopg://USER@HOST/NAME (extra 'postgres').",
        ),
        "datastore.relative_path_prefix": _Spec(
            None, _opt_str, "Prefix used when a write names none (None means 'default')."
        ),
        "datastore.checksum": _Spec(
            "crc32c",
            _one_of("crc32c", "sha256", None),
            "'crc32c': name each new object's crc32c in its key and check it on every full "
            "read; 'sha256': also add sha256= (content identity) to new references and "
            "check that instead; None: no checksum for new objects.",
        ),
        "datastore.storage_options": _Spec(
            None,
            _mapping,
            "Options for a remote datastore, given to fsspec (credentials, client_kwargs...).",
        ),
        "datastore.fsync": _Spec(
            False, _bool, "fsync each object and its directory so writes survive power loss."
        ),
        "persist.durable": _Spec(
            True,
            _bool,
            "Before persist commits an experiment's rows, flush the objects it wrote (and "
            "their folders) to disk, so that no row survives a power cut that its objects "
            "do not.",
        ),
        "progress": _Spec(
            True,
            _bool,
            "Show progress bars on stderr for long operations (only when it is a terminal).",
        ),
        "codecs.arrow.compression": _Spec(
            None,
            _one_of(None, "lz4", "zstd"),
            "None, 'lz4' or 'zstd': compress the buffers of tables written with the arrow "
            "codec (smaller files; reads then copy instead of sharing the memory map).",
        ),
        "codecs.pickle.allow": _Spec(
            (), _patterns, "Extra classes the pickle codec may build: globs over module.qualname."
        ),
        "codecs.pickle.unrestricted": _Spec(
            False, _bool, "Load any pickle: only for stores whose every writer you trust."
        ),
    }
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_name(key: str) -> str:
    """The environment variable of option ``key``: ``datastore.url`` is read from
    ``TYPEDSTORE_DATASTORE_URL``."""
    return "TYPEDSTORE_" + key.upper().replace(".", "_")


def _from_env(key: str, spec: _Spec, text: str) -> Any:
    """The value an environment variable gives an option: JSON when it parses as JSON the
    option takes, else text (true/false/1/0/yes/no/on/off for booleans, empty for None,
    commas between patterns)."""
    candidates: list[Any] = []
    with contextlib.suppress(ValueError):
        candidates.append(json.loads(text))
    lowered = text.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        candidates.append(lowered in _TRUE)
    if not text.strip():
        candidates.append(None)
    candidates.append(tuple(part.strip() for part in text.split(",") if part.strip()))
    candidates.append(text)
    error: Exception | None = None
    for candidate in candidates:
        try:
            return spec.check(candidate)
        except TypeError as exc:
            error = exc
    raise OptionValueError(
        f"environment variable {env_name(key)}={text!r:.80} is no value of option {key!r}: "
        f"{error}"
    )


_overrides: ContextVar[Mapping[str, Any]] = ContextVar(
    "typedstore_option_overrides", default=MappingProxyType({})
)


class Options:
    """Named settings with dotted keys.

    ``set`` changes a value for the whole process; ``ctx`` overrides values only inside a
    ``with`` block and only for the current thread or asyncio task (it uses contextvars).
    An option neither set nor overridden takes the value of its environment variable
    (``TYPEDSTORE_`` and the key in capitals with ``_`` for ``.``, see :func:`env_name`),
    read when it is first needed and again after ``reset``, else its default.
    Unknown keys raise :class:`~typedstore.errors.UnknownOptionError`, values of the wrong
    type :class:`~typedstore.errors.OptionValueError`.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        # From the environment: key -> (the variable's text, its value), read on first use.
        self._env: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()
        # Bumped by every set and reset: lets hot paths keep what they derived from options.
        self._generation = 0

    def names(self) -> list[str]:
        """All option keys."""
        return sorted(_SPECS)

    def describe(self, key: str) -> str:
        """One-line documentation of an option."""
        return self._spec(key).doc

    def get(self, key: str) -> Any:
        """Value of option ``key`` in the current context."""
        spec = self._spec(key)
        overrides = _overrides.get()
        if key in overrides:
            return overrides[key]
        if key in self._values:
            return self._values[key]
        return self._from_environment(key, spec)

    def _from_environment(self, key: str, spec: _Spec) -> Any:
        cached = self._env.get(key)
        if cached is not None:
            return cached[1]
        text = os.environ.get(env_name(key))
        value = spec.default if text is None else _from_env(key, spec, text)
        self._env[key] = (text or "", value)
        return value

    def set(self, key: str, value: Any) -> None:
        """Set option ``key`` for the whole process."""
        checked = self._check(key, value)
        with self._lock:
            self._values[key] = checked
            self._generation += 1

    def reset(self, key: str | None = None) -> None:
        """Forget what ``set`` gave ``key`` (every option when None): it takes its
        environment variable again (read anew), else its default."""
        with self._lock:
            if key is None:
                self._values.clear()
                self._env.clear()
            else:
                self._spec(key)
                self._values.pop(key, None)
                self._env.pop(key, None)
            self._generation += 1

    @contextlib.contextmanager
    def ctx(self, values: Mapping[str, Any]) -> Iterator[None]:
        """Override options inside a ``with`` block, for this thread or task only."""
        checked = {key: self._check(key, value) for key, value in values.items()}
        token = _overrides.set(MappingProxyType({**_overrides.get(), **checked}))
        try:
            yield
        finally:
            _overrides.reset(token)

    def revision(self) -> tuple[int, Mapping[str, Any]]:
        """A count of process-wide changes and this context's overrides: while neither
        changes (the count by value, the overrides by identity), no option does, so a
        caller may keep what it derived from options."""
        return self._generation, _overrides.get()

    def _spec(self, key: str) -> _Spec:
        try:
            return _SPECS[key]
        except (KeyError, TypeError):
            raise UnknownOptionError(
                f"unknown option {key!r}; known options: {', '.join(sorted(_SPECS))}"
            ) from None

    def _check(self, key: str, value: Any) -> Any:
        spec = self._spec(key)
        try:
            return spec.check(value)
        except TypeError as exc:
            raise OptionValueError(f"option {key!r}: {exc}, got {value!r}") from None


#: The process-wide options.
options = Options()
