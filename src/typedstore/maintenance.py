"""Maintenance: remove leftovers of interrupted writes, and verify stored objects."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import attrs

from typedstore import _strictjson, database
from typedstore.codecs.safetensors import read_header
from typedstore.datastore import DataStore
from typedstore.errors import (
    DecodeError,
    TypedStoreError,
    UnknownCodecError,
    UnregisteredClassError,
    UnsafeDataError,
    describe,
)
from typedstore.experiment import is_id
from typedstore.fields import datastore_urls
from typedstore.keys import describe_key
from typedstore.policy import LARGE
from typedstore.protocols import RemovesTemporary, TracksChanges
from typedstore.reference import Reference
from typedstore.store import Store, default_store

__all__ = [
    "Damage",
    "GcReport",
    "collect_garbage",
    "detect_codec",
    "reference_for",
    "references",
    "verify",
]


@attrs.frozen
class GcReport:
    """What :func:`collect_garbage` removed, and what it left alone."""

    temporary_files: int
    generations: int
    #: What was not touched: an experiment row whose id or generation is not an id, a
    #: folder in an experiment's folder that is not a generation, generations of a
    #: storage that cannot tell their age.
    skipped: tuple[str, ...] = ()


@attrs.frozen
class Damage:
    """An object that does not decode, with the reason."""

    key: str
    reference: str | None
    error: str
    #: False when the bytes may well be sound but this process cannot decode them: a
    #: class it has not registered, a pickle its options refuse, a codec it lacks.
    damaged: bool = True


# Errors of this process's registry and options, not of the stored bytes.
_NOT_HERE = (UnregisteredClassError, UnsafeDataError, UnknownCodecError)


def collect_garbage(older_than: float = 3600.0, *, store: Store | None = None) -> GcReport:
    """Remove what interrupted writes and persists left behind, if older than ``older_than``
    seconds: temporary files, and generations of experiments that their rows do not name.

    The age threshold protects writes and persists still in progress; reads never see
    either kind of leftover.
    """
    store = store or default_store()
    storage = store.storage
    temporary = 0
    if isinstance(storage, RemovesTemporary):
        temporary = storage.remove_temporary(older_than)
    generations = 0
    skipped: list[str] = []
    cutoff = time.time() - older_than
    for exp_id, current in _experiment_generations():
        # Rows are untrusted input: only an id may name a folder gc deletes in.
        if not (is_id(exp_id) and is_id(current)):
            skipped.append(f"experiment row {exp_id!r:.80}: not a valid id and generation")
            continue
        for folder in store.children(exp_id):
            prefix = f"{exp_id}/{folder}"
            if not is_id(folder):
                skipped.append(f"{prefix}: not a generation folder")
                continue
            if not isinstance(storage, TracksChanges):
                skipped.append(f"{prefix}: {storage.url} cannot tell when it changed")
                continue
            modified = storage.last_modified(prefix)
            if folder != current and modified is not None and modified <= cutoff:
                with database.transaction() as conn:
                    # Re-read under the write lock: a persist may have just committed it.
                    rows = conn.execute(
                        "SELECT generation FROM experiments WHERE id = :id", {"id": exp_id}
                    )
                    if rows and rows[0][0] != folder:
                        storage.delete(prefix)
                        generations += 1
    return GcReport(temporary, generations, tuple(skipped))


def _experiment_generations() -> list[tuple[str, str]]:
    with database.reading() as conn:
        if conn is None:
            return []
        return [(row[0], row[1]) for row in conn.execute("SELECT id, generation FROM experiments")]


def references() -> dict[str, str]:
    """Key -> reference URL, for every DataStore an experiment's rows name: their exact
    codec and checksum, which the objects alone may not tell."""
    with database.reading() as conn:
        if conn is None:
            return {}
        # Only documents that name a DataStore are parsed.
        documents = conn.execute(
            "SELECT CAST(fields AS TEXT) FROM experiments "
            "WHERE CAST(fields AS TEXT) LIKE '%\"$datastore\"%' UNION ALL "
            "SELECT CAST(fields AS TEXT) FROM runs "
            "WHERE CAST(fields AS TEXT) LIKE '%\"$datastore\"%'"
        )
    refs = {}
    for url in (url for (document,) in documents for url in datastore_urls(document)):
        try:
            refs[Reference.parse(url).key] = url
        except TypedStoreError:
            continue  # reported as damage of the row by load_experiment, not of a file
    return refs


def reference_for(store: Store, key: str, known: Mapping[str, str]) -> tuple[Reference, str]:
    """The reference of the object under ``key`` and where its codec comes from:
    ``"experiment"`` (``known``, from :func:`references`: the exact reference),
    ``"name"`` (the object's name says it) or ``"content"`` (an object named before names
    said anything, or not by typedstore: the codec it looks like)."""
    url = known.get(key)
    if url is not None:
        return Reference.parse(url), "experiment"
    described = describe_key(key)
    if described is not None:
        return Reference(key, described.codec), "name"
    return Reference(key, detect_codec(store, key)), "content"


def detect_codec(store: Store, key: str) -> str:
    """The codec an object looks like, for objects whose name does not say it.

    Anything that starts like a safetensors file (a plausible header length, then ``{``)
    counts as one, even if its header is damaged, so that :func:`verify` reports it.
    """
    with store.open(key) as reader:
        head = reader.read(0, 16)
        size = reader.size
        if head.startswith(b"\x93NUMPY"):
            return "npy"
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return "pickle"
        if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
            try:
                metadata = read_header(reader).metadata
            except DecodeError:
                return "safetensors"
            kind = metadata.get("typedstore.kind", "")
            return kind if kind in ("tree", "attrs", "datastore") else "safetensors"
        if size < LARGE:
            try:
                _strictjson.loads(reader.read(0, size))
                return "json"
            except (ValueError, RecursionError):
                pass
    return "raw"


def verify(
    prefix: str | None = None, *, store: Store | None = None
) -> Iterator[tuple[str, Damage | None]]:
    """Decode every object under ``prefix`` (all objects when None), checking checksums.

    Yields ``(key, None)`` for a sound object and ``(key, Damage)`` for one that does not
    decode or whose bytes differ from its checksum (``Damage.damaged`` is False when only
    this process's registry or options stand in the way).
    Every object is read with the codec and checked against the crc32c its name says
    (exact, with no database); objects that an experiment names with the reference it
    holds; objects named before names said anything, with the codec their content
    looks like, so a damaged one may only show as not decodable by any codec it
    resembles.
    """
    store = store or default_store()
    known = references()
    for key in store.storage.list(prefix):
        url = None
        try:
            ref, _ = reference_for(store, key, known)
            url = str(ref)
            if ref.codec == "datastore":
                DataStore.from_url(url, store=store).load()
            else:
                store.read_deserialize(ref)
        except TypedStoreError as exc:
            yield key, Damage(key, url, describe(exc), damaged=not isinstance(exc, _NOT_HERE))
            continue
        yield key, None
