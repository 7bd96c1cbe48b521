"""What the database can store: the ranges of its column types, checked before a write.

A value the database refuses makes the whole transaction fail; validation checks every field of
a message against these limits so that a message that cannot be stored is dead-lettered up
front instead of failing the write of everything batched with it.
"""
from __future__ import annotations

import math
import re

#: PostgreSQL ``bigint``
BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
#: ``timestamptz`` values the driver can encode: Python's datetime covers years 1 to 9999
#: (PostgreSQL itself goes further), as Unix seconds
TIME_MIN, TIME_MAX = -62_135_596_800.0, 253_402_300_799.0
#: ids (sensors, areas, collectors) as the config allows them
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def time_problem(t: float) -> str | None:
    """Why Unix seconds ``t`` cannot be stored as ``timestamptz``, or None."""
    if not math.isfinite(t):
        return "is not a finite number"
    if not TIME_MIN <= t <= TIME_MAX:
        return "is outside the years 1 to 9999"
    return None


def text_problem(s: str, max_chars: int) -> str | None:
    """Why ``s`` cannot be stored in a ``text`` column of at most ``max_chars`` characters, or None."""
    if len(s) > max_chars:
        return f"is longer than {max_chars} characters"
    return unstorable_char(s)


def text_problems_in(obj: object, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, why) of every text in a nested value (dict keys included) that no ``text`` or
    ``jsonb`` column can hold: NUL (jsonb refuses ``\\u0000`` too) and lone surrogates."""
    out: list[tuple[tuple, str]] = []
    if isinstance(obj, str):
        why = unstorable_char(obj)
        if why is not None:
            out.append((path, why))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and (why := unstorable_char(k)) is not None:
                out.append((path + (k,), f"key {why}"))
            out += text_problems_in(v, path + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += text_problems_in(v, path + (i,))
    return out


def unstorable_char(s: str) -> str | None:
    """Why ``s`` holds a character no ``text`` column can store (NUL, a lone surrogate), or None."""
    if "\x00" in s:
        return "contains a NUL character"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"is not valid Unicode (lone surrogate U+{ord(s[e.start]):04X} at character {e.start})"
    return None


def is_id(s: str) -> bool:
    return ID_PATTERN.fullmatch(s) is not None


def safe_text(s: str, max_chars: int) -> str:
    """``s`` made storable in a ``text`` column: NUL and lone surrogates written as escapes, cut
    to ``max_chars``. For free text that quotes input (dead-letter details)."""
    s = s[:max_chars].replace("\x00", "\\x00")
    return s.encode("utf-8", "backslashreplace").decode("utf-8")
