"""The project's cattrs converter: DataStore fields become references and back.

Use it to keep records that hold DataStores in a database as plain data::

    from typedstore.converter import converter

    row = converter.unstructure(record)        # DataStore fields -> reference strings
    record = converter.structure(row, Record)  # reference strings -> DataStores (lazy)

Unstructuring a DataStore stores it (unless it is unchanged since it was last stored or
loaded) and gives its reference URL; structuring loads it lazily.
"""

from __future__ import annotations

from typing import Any

import cattrs

from typedstore.datastore import DataStore

__all__ = ["configure", "converter"]


def _structure_datastore(value: Any, _: Any) -> DataStore:
    if not isinstance(value, str):
        raise TypeError(f"a DataStore is structured from its reference URL, got {value!r}")
    return DataStore.from_url(value, lazy=True)


def configure(target: cattrs.Converter) -> cattrs.Converter:
    """Teach another cattrs converter to store and load DataStores; return it."""
    target.register_unstructure_hook(DataStore, lambda ds: ds.to_url())
    target.register_structure_hook(DataStore, _structure_datastore)
    return target


#: A cattrs converter that turns DataStores into references and back.
converter = configure(cattrs.Converter())
