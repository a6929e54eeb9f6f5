"""A readable diff of two prompt templates: lines kept, removed and added, and within a changed
line the words that changed (GEPA often rewrites one long paragraph, where a line diff alone
would only say "everything changed")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Literal

Op = Literal["equal", "delete", "insert", "replace"]
_TOKENS = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One row of the diff. For `replace`, `words` holds (op, text) runs across both sides."""

    op: Op
    old: str | None
    new: str | None
    words: list[tuple[Op, str]] = field(default_factory=list)


def template_diff(old: str, new: str) -> list[DiffRow]:
    """Rows in order: `equal`, `delete` (old only), `insert` (new only), `replace` (paired lines)."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows.extend(DiffRow("equal", line, line) for line in a[i1:i2])
        elif op == "delete":
            rows.extend(DiffRow("delete", line, None) for line in a[i1:i2])
        elif op == "insert":
            rows.extend(DiffRow("insert", None, line) for line in b[j1:j2])
        else:
            for k in range(max(i2 - i1, j2 - j1)):
                left = a[i1 + k] if i1 + k < i2 else None
                right = b[j1 + k] if j1 + k < j2 else None
                if left is None:
                    rows.append(DiffRow("insert", None, right))
                elif right is None:
                    rows.append(DiffRow("delete", left, None))
                else:
                    rows.append(DiffRow("replace", left, right, word_diff(left, right)))
    return rows


def word_diff(old: str, new: str) -> list[tuple[Op, str]]:
    """(op, text) runs that turn `old` into `new` word by word (whitespace kept)."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    runs: list[tuple[Op, str]] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("equal", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            runs.append(("delete", "".join(a[i1:i2])))
        if j2 > j1:
            runs.append(("insert", "".join(b[j1:j2])))
    return runs
