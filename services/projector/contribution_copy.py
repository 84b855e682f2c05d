"""Postgres COPY data (text format) for the contribution tables, built with joins and ``translate``
in C loops: asyncpg's own encoder checks every array element's type in Python, which was most of
the cost of writing the sums. Only the column types these tables use are supported."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# COPY's text format: backslash escapes for the characters that separate fields and rows.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    return value.translate(_ESCAPES)


def _ints(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _texts(values: Sequence[str]) -> str:
    # Each element quoted (and its quotes and backslashes escaped) for the array literal, then the
    # whole literal escaped for COPY.
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return _text("{" + ",".join(quoted) + "}")


_FORMAT: dict[str, Callable[[Any], str]] = {
    "int2": str,
    "int4": str,
    "int8": str,
    "bool": lambda v: "t" if v else "f",
    "text": _text,
    "jsonb": _text,
    "int4[]": _ints,
    "int8[]": _ints,
    "text[]": _texts,
}


def text_copy(rows: Iterable[Sequence[Any]], kinds: Sequence[str]) -> io.BytesIO:
    """``rows`` (None for NULL) in COPY's text format, for ``copy_to_table(format="text")``."""
    formats = [_FORMAT[k] for k in kinds]
    lines = (
        "\t".join("\\N" if v is None else f(v) for f, v in zip(formats, row, strict=True)) + "\n"
        for row in rows
    )
    return io.BytesIO("".join(lines).encode())
