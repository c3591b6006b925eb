"""Compact JSON Schemas for `tools/list`: the same contract in far fewer tokens.

Pydantic writes schemas for people browsing documentation: a `title` on every property, `$defs` with `$ref`s,
`anyOf: [X, {"type": "null"}]` for every optional field and `"default": null`. An assistant reads `tools/list`
at the start of every conversation, so each tool's schemas are rewritten here into a smaller equivalent:
references inlined, titles dropped, ids as plain strings (every id argument says it is one), an optional
argument advertised by its type alone (leaving it out is how to say "none"), and output schemas reduced to their
shape (property types and nesting), since what the fields mean is in the input schemas and tool descriptions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# What an output schema keeps: enough for a client to validate structured content and to see its shape.
OUTPUT_KEYWORDS = frozenset({"type", "properties", "items", "anyOf"})


def compact_input(schema: dict[str, Any], *, nullable: Collection[str] = ()) -> dict[str, Any]:
    """The input schema without titles and references. Only the top-level arguments named in `nullable` (where
    an explicit null means something, e.g. "unlink") keep `null` among their types. No other argument is
    accepted (the server refuses unknown ones), and the schema says so."""
    out = _compact(schema, schema.get("$defs", {}), keep=None)
    out["additionalProperties"] = False
    for name, prop in out.get("properties", {}).items():
        if name not in nullable:
            out["properties"][name] = _without_null(prop)
    return out


def compact_output(schema: dict[str, Any]) -> dict[str, Any]:
    return _compact(schema, schema.get("$defs", {}), keep=OUTPUT_KEYWORDS)


def _compact(node: Any, defs: dict[str, Any], keep: frozenset[str] | None) -> Any:
    if isinstance(node, list):
        return [_compact(item, defs, keep) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].removeprefix("#/$defs/")]
        return _compact({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs, keep)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$defs", "title") or (key, value) in (("default", None), ("format", "uuid")):
            continue
        if keep is not None and key not in keep:
            continue
        if key == "properties":  # a map of names to schemas: the names are not keywords
            out[key] = {name: _compact(prop, defs, keep) for name, prop in value.items()}
        else:
            out[key] = _compact(value, defs, keep)
    return _merge_types(out)


def _merge_types(node: dict[str, Any]) -> dict[str, Any]:
    """`{"anyOf": [{"type": A}, {"type": B}]}` becomes `{"type": [A, B]}`; otherwise see `_merge_null`."""
    options = node.get("anyOf")
    if options and all(isinstance(o, dict) and o.keys() == {"type"} and isinstance(o["type"], str) for o in options):
        return {**{k: v for k, v in node.items() if k != "anyOf"}, "type": [o["type"] for o in options]}
    return _merge_null(node)


def _merge_null(node: dict[str, Any]) -> dict[str, Any]:
    """`{"anyOf": [X, {"type": "null"}], ...}` becomes X with "null" among its types (and enum values)."""
    options = node.get("anyOf")
    if not options or len(options) != 2 or {"type": "null"} not in options:
        return node
    (other,) = [option for option in options if option != {"type": "null"}]
    kind = other.get("type")
    if not isinstance(kind, str):
        return node
    merged = {**other, **{k: v for k, v in node.items() if k != "anyOf"}, "type": [kind, "null"]}
    if "enum" in merged and None not in merged["enum"]:
        merged["enum"] = [*merged["enum"], None]
    return merged


def _without_null(node: dict[str, Any]) -> dict[str, Any]:
    kind = node.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        node = {**node, "type": rest[0] if len(rest) == 1 else rest}
        if "enum" in node:
            node["enum"] = [v for v in node["enum"] if v is not None]
    return node
