"""JSON Schema export: one file per event type, for producers in any language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.events import EVENT_CLASSES


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """`{event type: JSON Schema}` generated from the pydantic models."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type, cls in EVENT_CLASSES.items():
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:gepa-stream:event:{event_type}"
        schema["title"] = event_type
        schemas[event_type] = schema
    return schemas


def write_json_schemas(out_dir: Path) -> list[Path]:
    """Write `<type>.schema.json` for every event type into `out_dir`; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for event_type, schema in event_json_schemas().items():
        path = out_dir / f"{event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
