"""The exported JSON Schemas accept the sample events and reject broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from daemon.cli import app
from schemas import EVENT_CLASSES
from tests.samples import sample_events


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("schemas")
    result = CliRunner().invoke(app, ["schemas", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.schema.json"))
    assert len(files) == len(EVENT_CLASSES)
    return {json.loads(f.read_text())["title"]: json.loads(f.read_text()) for f in files}


def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
def test_schema_accepts_the_sample(exported, event) -> None:
    _validator(exported[event.type]).validate(json.loads(event.to_json()))


BREAKAGES = [
    ("missing data", lambda o: o.pop("data")),
    ("missing id", lambda o: o.pop("id")),
    ("wrong specversion", lambda o: o.update(specversion="0.3")),
    ("wrong type", lambda o: o.update(type="gepa.other.v1")),
    ("data not an object", lambda o: o.update(data="text")),
    ("unknown data field", lambda o: o["data"].update(surprise=1)),
    (
        "prompt with spaces",
        lambda o: o["data"].update(prompt="has spaces") if "prompt" in o["data"] else o.pop("data"),
    ),
]


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
@pytest.mark.parametrize(("name", "breakage"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_schema_rejects_broken_events(exported, event, name, breakage) -> None:
    obj = json.loads(event.to_json())
    breakage(obj)
    assert list(_validator(exported[event.type]).iter_errors(obj)), f"{name} was accepted"


def test_schema_files_are_named_by_type(tmp_path: Path) -> None:
    CliRunner().invoke(app, ["schemas", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {f"{t}.schema.json" for t in EVENT_CLASSES}
