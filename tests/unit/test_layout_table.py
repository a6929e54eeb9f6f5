"""The README's layout table names every module of the four rooms, and nothing that is not there;
unit tests sit in their room's folder."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("schemas", "optimization", "handlers", "daemon")


def layout_paths(readme: str) -> set[str]:
    """The backticked paths in the first column of the table under `## Layout`."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`]+)`", row.split("|")[1])}


def room_modules() -> set[str]:
    """Every module and package of the rooms: `.py` files (an `__init__.py` as its package's folder)."""
    found = set()
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT)
            found.add(f"{relative.parent}/" if path.name == "__init__.py" else str(relative))
    return found


def test_the_layout_table_matches_the_tree() -> None:
    listed = layout_paths((ROOT / "README.md").read_text(encoding="utf-8"))
    missing_rows = room_modules() - listed
    assert missing_rows == set(), "modules without a row in the README's layout table"
    stale_rows = {path for path in listed if not (ROOT / path).exists()}
    assert stale_rows == set(), "rows of the README's layout table naming paths that do not exist"


def test_the_parser_sees_rows_and_only_first_cells() -> None:
    readme = "# x\n\n## Layout\n\n| path | holds |\n|---|---|\n| `a/`, `b.py` | uses `c.py` |\n\n## Next\n| `d.py` | |\n"
    assert layout_paths(readme) == {"a/", "b.py"}


# tree-wide tests: they read every room, so they sit above the rooms' folders
TREE_WIDE = {"test_layers.py", "test_layout_table.py"}


def test_unit_tests_mirror_the_rooms() -> None:
    """A module's unit tests sit in the folder of its room (`tests/unit/daemon/` for `daemon/...`)."""
    unit = ROOT / "tests" / "unit"
    loose = sorted(
        str(path.relative_to(unit))
        for path in unit.rglob("test_*.py")
        if path.relative_to(unit).parts[0] not in ROOMS and path.name not in TREE_WIDE
    )
    assert loose == [], "unit tests outside their room's folder"
