"""Flink column types derived from the Avro contracts in avro/*.avsc.

The .avsc files are the contract between jobs; deriving the DDL from them (instead of
writing it twice) keeps the Flink side from drifting, and tests/job/test_avro_contract.py
checks with Flink's own converter that the DDL encodes to exactly these schemas."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

AVRO_DIR = Path(__file__).resolve().parent.parent / "avro"

_PRIMITIVES = {"string": "STRING", "long": "BIGINT", "int": "INT", "boolean": "BOOLEAN",
               "bytes": "BYTES", "double": "DOUBLE", "float": "FLOAT"}
# Names Flink SQL reserves; such fields must be back-quoted in DDL and queries.
_QUOTE = {"arm", "raw", "value", "key", "timestamp", "partition", "offset", "variant"}


@cache
def load(name: str) -> dict[str, Any]:
    """Parsed avro/<name>.avsc."""
    return json.loads((AVRO_DIR / f"{name}.avsc").read_text())


def _flink_type(avro_type: Any) -> str:
    nullable = False
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1 or len(avro_type) != 2:
            raise ValueError(f"only [null, T] unions are supported, got {avro_type}")
        nullable, avro_type = True, branches[0]
    if isinstance(avro_type, dict) and avro_type.get("type") == "map":
        flink = f"MAP<STRING NOT NULL, {_flink_type(avro_type['values'])}>"
    elif isinstance(avro_type, str) and avro_type in _PRIMITIVES:
        flink = _PRIMITIVES[avro_type]
    else:
        raise ValueError(f"unsupported Avro type {avro_type}")
    return flink if nullable else f"{flink} NOT NULL"


def quote(name: str) -> str:
    return f"`{name}`" if name in _QUOTE else name


def field_names(name: str) -> list[str]:
    return [f["name"] for f in load(name)["fields"]]


def columns(name: str) -> list[tuple[str, str]]:
    """[(column name, Flink SQL type)] in schema order."""
    return [(f["name"], _flink_type(f["type"])) for f in load(name)["fields"]]


def column_ddl(name: str) -> str:
    """The column list for a CREATE TABLE whose value format encodes to this schema."""
    return ",\n  ".join(f"{quote(col)} {typ}" for col, typ in columns(name))


def select_list(name: str, prefix: str = "") -> str:
    return ", ".join(f"{prefix}{quote(col)}" for col in field_names(name))


def _base(flink_type: str) -> str:
    """The type without NOT NULL: Python operators hand rows to Java with nullable fields
    either way. Maps are string-to-string (attributes), the only kind the schemas use."""
    base = flink_type.removesuffix(" NOT NULL")
    if base.startswith("MAP<"):
        if base != "MAP<STRING NOT NULL, STRING NOT NULL>":
            raise ValueError(f"only string-to-string maps are supported, got {flink_type}")
        return "MAP"
    return base


def type_info(flink_type: str) -> Any:
    """DataStream type info (pyflink.common.Types) of a column type from columns()."""
    from pyflink.common import Types

    base = _base(flink_type)
    if base == "MAP":
        return Types.MAP(Types.STRING(), Types.STRING())
    return {"STRING": Types.STRING, "BIGINT": Types.LONG, "INT": Types.INT,
            "BOOLEAN": Types.BOOLEAN, "DOUBLE": Types.DOUBLE}[base]()


def data_type(flink_type: str) -> Any:
    """Table API data type (pyflink.table.DataTypes) of a column type from columns()."""
    from pyflink.table import DataTypes

    base = _base(flink_type)
    if base == "MAP":
        return DataTypes.MAP(DataTypes.STRING(), DataTypes.STRING())
    return {"STRING": DataTypes.STRING, "BIGINT": DataTypes.BIGINT, "INT": DataTypes.INT,
            "BOOLEAN": DataTypes.BOOLEAN, "DOUBLE": DataTypes.DOUBLE,
            "BYTES": DataTypes.BYTES}[base]()

def row_type_info(name: str, extra: list[tuple[str, str]] | None = None) -> Any:
    """Types.ROW_NAMED of a schema's columns (+ `extra` (name, Flink type) columns): the
    output type of a Python operator whose rows go on as this schema."""
    from pyflink.common import Types

    cols = columns(name) + (extra or [])
    return Types.ROW_NAMED([c for c, _ in cols], [type_info(t) for _, t in cols])
