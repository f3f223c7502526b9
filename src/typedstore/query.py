"""Runs across experiments, found by field value in the database itself."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs

from typedstore import database
from typedstore import fields as fields_format
from typedstore.fields import Fields

__all__ = ["Condition", "FoundRun", "find_runs"]

_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_CONDITION = re.compile(r"\s*(\S.*?)\s*(==|!=|<=|>=|<|>)\s*(.*?)\s*")


@attrs.frozen
class Condition:
    """``field OP value``: a run's plain field compared with a JSON scalar.

    Only runs that have the field, holding a value of the same kind (number, string,
    bool, or null), match; bools and null take ``==`` and ``!=`` only. Strings compare
    in the database's collation.
    """

    field: str
    op: str
    value: bool | int | float | str | None

    def __attrs_post_init__(self) -> None:
        if type(self.field) is not str or not self.field:
            raise ValueError(f"a condition names a field, got {self.field!r}")
        if self.op not in _OPERATORS:
            raise ValueError(f"operator {self.op!r} is not one of {', '.join(_OPERATORS)}")
        if type(self.value) not in (type(None), bool, int, float, str):
            raise ValueError(f"a condition compares with a JSON scalar, not {self.value!r:.40}")
        if type(self.value) is float and not math.isfinite(self.value):
            raise ValueError(f"a condition compares with a finite number, not {self.value}")
        if type(self.value) in (bool, type(None)) and self.op not in ("==", "!="):
            raise ValueError(f"{self.value!r} compares with == and != only")

    @classmethod
    def parse(cls, text: str) -> Condition:
        """``"accuracy > 0.9"``, ``"model == 'svm'"``: the value is JSON (a word that is
        not JSON is a string; single quotes may stand for double quotes)."""
        match = _CONDITION.fullmatch(text)
        if match is None:
            raise ValueError(
                f"condition {text!r:.80} is not FIELD OP VALUE with OP one of "
                + ", ".join(_OPERATORS)
            )
        field, op, raw = match.groups()
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            return cls(field, op, raw[1:-1])
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return cls(field, op, value)


@attrs.frozen
class FoundRun:
    """A run that matched: where it is, and its fields (DataStores load lazily)."""

    experiment_id: str
    experiment: str
    position: int
    id: str
    fields: Fields


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "bool"
    return "string" if type(value) is str else "number"


# json_each's types (SQLite) and jsonb_typeof's (PostgreSQL) for each kind of value.
_SQLITE_TYPES = {
    "null": "('null')",
    "bool": "('true', 'false')",
    "string": "('text')",
    "number": "('integer', 'real')",
}
_POSTGRES_TYPES = {
    "null": "'null'",
    "bool": "'boolean'",
    "string": "'string'",
    "number": "'number'",
}


def _where(dialect: str, i: int, condition: Condition) -> tuple[str, dict[str, Any]]:
    """The SQL of one condition on run ``r``, and its parameters (the field name and the
    value are always bound, never spliced into the SQL)."""
    kind, op = _kind(condition.value), condition.op.replace("==", "=")
    key, value = f"k{i}", f"v{i}"
    if dialect == "postgresql":
        node = f"(CAST(r.fields AS JSONB) -> :{key})"
        if kind == "null":
            return f"jsonb_typeof({node}) {op} 'null'", {key: condition.field}
        sql = (
            f"jsonb_typeof({node}) = {_POSTGRES_TYPES[kind]} "
            f"AND {node} {op} CAST(:{value} AS JSONB)"
        )
        return sql, {key: condition.field, value: json.dumps(condition.value)}
    if dialect == "sqlite":
        if kind == "null":
            test = f"j.type {op} 'null'"
        else:
            test = f"j.type IN {_SQLITE_TYPES[kind]} AND j.value {op} :{value}"
        sql = f"EXISTS (SELECT 1 FROM json_each(r.fields) j WHERE j.key = :{key} AND {test})"
        # json_each gives true and false as 1 and 0.
        bound = int(condition.value is True) if kind == "bool" else condition.value
        return sql, {key: condition.field, value: bound}
    raise NotImplementedError(f"queries by field value run on SQLite and PostgreSQL, not {dialect}")


def find_runs(
    *conditions: Condition | str | tuple[str, str, Any], experiment: str | None = None
) -> list[FoundRun]:
    """The runs, across experiments (or of ``experiment``, an id or name), whose plain
    fields meet every condition; the database does the filtering.

    A condition is a :class:`Condition`, a string such as ``"accuracy > 0.9"``, or a
    tuple ``("accuracy", ">", 0.9)``. Runs come in the order of their experiments'
    creation, then of the runs.
    """
    parsed = [
        c if isinstance(c, Condition) else Condition.parse(c) if isinstance(c, str) else
        Condition(*c)
        for c in conditions
    ]  # fmt: skip
    with database.reading() as conn:
        if conn is None:
            return []
        clauses, params = [], {}
        for i, condition in enumerate(parsed):
            sql, bound = _where(conn.dialect, i, condition)
            clauses.append(sql)
            params.update(bound)
        if experiment is not None:
            clauses.append("(e.id = :experiment OR e.name = :experiment)")
            params["experiment"] = experiment
        rows = conn.execute(
            "SELECT e.id, e.name, r.position, r.id, CAST(r.fields AS TEXT) FROM runs r "
            "JOIN experiments e ON e.id = r.experiment_id "
            + ("WHERE " + " AND ".join(clauses) if clauses else "")
            + " ORDER BY e.created_at, e.name, r.position",
            params,
        )
    return [
        FoundRun(exp_id, name, position, run_id,
                 fields_format.decode(document, f"run {run_id} of experiment {name!r}"))
        for exp_id, name, position, run_id, document in rows
    ]  # fmt: skip
