"""The API's documentation page, ``/docs``, drawn on the server from the OpenAPI document.

FastAPI's own page loads Swagger UI's script and styles from a CDN, onto the origin of the
session cookie, and is blank offline. A packaged copy of Swagger UI would still run 1.5 MB of
someone else's script where the cookie lives (and swagger-ui-bundle's 4.x cannot read the
OpenAPI 3.1 document FastAPI writes), so this page is plain HTML instead: no script, nothing
from another origin, under the pages' Content-Security-Policy. The machine-readable document
stays at ``/openapi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from facetrail.web.ui import render

router = APIRouter(include_in_schema=False)

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Field:
    """A parameter or a field of a request body."""

    name: str
    where: str
    kind: str
    required: bool
    note: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    description: str
    parameters: list[Field]
    body_type: str
    body: list[Field]
    responses: list[tuple[str, str]]


def text_parts(text: str) -> list[tuple[str, bool]]:
    """Markdown's `code` spans of a description: (text, is_code) parts, nothing else kept."""
    return [(part, i % 2 == 1) for i, part in enumerate(text.split("`")) if part]


def kind_of(schema: dict[str, Any]) -> str:
    """A schema's type in a few words: ``integer``, ``string or null``, ``array of string``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(kind_of(s) for s in schema["anyOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {kind_of(schema.get('items', {}))}"
    if kind == "string" and (schema.get("format") == "binary" or "contentMediaType" in schema):
        return "file"
    return kind


def note_of(schema: dict[str, Any], description: str | None = None) -> str:
    """The description and the limits of a value."""
    notes = [description or schema.get("description", "")]
    for key, label in (("minimum", ">="), ("maximum", "<="), ("minLength", "length >="),
                       ("maxLength", "length <="), ("pattern", "matches")):
        if key in schema:
            notes.append(f"{label} {schema[key]}")
    for choice in schema.get("anyOf", []):  # limits of an optional value
        notes += [n for n in note_of(choice).split("; ") if n]
    if "enum" in schema:
        notes.append("one of " + ", ".join(str(v) for v in schema["enum"]))
    if schema.get("default") is not None:
        notes.append(f"default {schema['default']}")
    return "; ".join(n for n in notes if n)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/components/schemas/"):
        return schema
    found: dict[str, Any] = spec.get("components", {}).get("schemas", {}).get(
        ref.rsplit("/", 1)[-1], {})
    return found


def _body(operation: dict[str, Any], spec: dict[str, Any]) -> tuple[str, list[Field]]:
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return "", []
    media_type, media = next(iter(content.items()))
    schema = _resolve(media.get("schema", {}), spec)
    required = set(schema.get("required", []))
    fields = [Field(name, "body", kind_of(prop), name in required, note_of(prop))
              for name, prop in schema.get("properties", {}).items()]
    return media_type, fields


def operations(spec: dict[str, Any]) -> list[tuple[str, list[Operation]]]:
    """The document's operations by tag, in the order the document lists them."""
    groups: dict[str, list[Operation]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            parameters = [
                Field(p["name"], p.get("in", ""), kind_of(p.get("schema", {})),
                      bool(p.get("required")), note_of(p.get("schema", {}), p.get("description")))
                for p in op.get("parameters", [])
            ]
            body_type, body = _body(op, spec)
            responses = [(status, str(r.get("description", "")))
                         for status, r in op.get("responses", {}).items()]
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append(Operation(
                method.upper(), path, op.get("summary", ""), op.get("description", ""),
                parameters, body_type, body, responses,
            ))
    return list(groups.items())


@router.get("/docs")
async def docs_page(request: Request) -> Response:
    spec = request.app.openapi()
    info = spec.get("info", {})
    return render(
        request, "docs.html", None, title="API", info=info,
        description=text_parts(info.get("description", "")), groups=operations(spec),
        text_parts=text_parts,
    )
