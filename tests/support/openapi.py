"""Validate JSON bodies against the schemas of TGI's OpenAPI contract (OpenAPI 3.0 -> JSON Schema)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "tgi-openapi.json"


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` becomes a JSON Schema union with null."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k not in ("nullable", "example", "default")}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    return _to_json_schema(json.loads(CONTRACT.read_text())["components"])


def validate(body: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError unless `body` matches components/schemas/<schema_name>."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    jsonschema.validate(body, schema)
