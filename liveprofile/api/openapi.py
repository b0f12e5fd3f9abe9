"""The profile API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Contract: :data:`DOCUMENT` describes exactly the routes of :data:`liveprofile.api.app.ROUTES` (every
path, GET only, and whether it needs the bearer token; ``tests/api/test_openapi.py`` checks both
ways against a running API, validates the document with ``openapi-spec-validator`` and real
answers against its schemas). It is data, written here from the app's contract, except the
profile's fields: those come from the profile schema (:data:`operators.schema.FIELDS`, the fields
the API shows), so a new field appears here without an edit.

The document needs no token (like ``/healthz``): it holds nothing about this deployment
(experiments, templates and tokens stay out of it). :func:`document_bytes` is the JSON the app
builds once, at construction.

May import: :mod:`operators`.
"""

from __future__ import annotations

from typing import Any

import orjson

from liveprofile.asgi import HEALTH_SCHEMA, json_content, schema_ref
from operators.schema import FIELDS, Kind

__all__ = ["DOCUMENT", "document_bytes", "profile_schema"]

_KIND_TEXT = {
    Kind.TEXT: "text",
    Kind.INT: "a decimal integer",
    Kind.MONEY: "a decimal amount with 2 places",
    Kind.FLOAT: "a decimal fraction",
    Kind.FLAG: '"0" or "1"',
    Kind.TIME: 'ISO 8601 UTC, "" when unknown',
}


def profile_schema() -> dict[str, Any]:
    """The profile's JSON schema: every shown field of :data:`operators.schema.FIELDS` (JSON fields
    decoded, the others the stored string), ``experiments``, and other stored fields as strings.

    >>> s = profile_schema()
    >>> s["properties"]["revenue_total"]["type"], "seq" in s["properties"], s["required"]
    ('string', False, ['experiments'])
    """
    props: dict[str, Any] = {}
    for f in FIELDS:
        if not f.shown:
            continue
        if f.kind is Kind.JSON:
            props[f.name] = {"description": "a JSON document, decoded (the stored string when it does not decode)"}
        else:
            props[f.name] = {"type": "string", "description": f"{_KIND_TEXT[f.kind]} (stored as a string, SPEC §4)"}
    props["experiments"] = {"type": "object", "additionalProperties": {"type": "string"}, "description": "{experiment: variant}"}
    return {"type": "object", "required": ["experiments"], "properties": props, "additionalProperties": {"type": "string"}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema_ref("Error"))}


_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_INTERNAL = _error("`internal_error`: an unexpected failure (Redis unreachable, say)")
_USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "example": "u1"}


def _op(op_id: str, summary: str, responses: dict[str, Any], *, auth: bool = True, parameters: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": [{"bearer": []}] if auth else []}
    if parameters:
        out["parameters"] = parameters
    out["responses"] = {**responses, **({"401": _UNAUTHORIZED} if auth else {})}
    out["responses"].setdefault("500", _INTERNAL)
    return {"get": out}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "liveprofile API",
        "version": "1",
        "summary": "Profiles, segments and open-time content from the live profile store",
        "description": (
            'Errors are `{"error": code, "message": text}`. Only GET is served: any other method is 405 '
            "`method_not_allowed`; a path that is not routed is 404 `not_found`. "
            "This document, /healthz and /metrics need no token."
        ),
    },
    "paths": {
        "/v1/profiles/{user_id}": _op(
            "getProfile", "The user's profile (a merged id answers with the surviving profile)",
            {"200": {"description": "the profile", "content": json_content(schema_ref("Profile"))},
             "404": _error("`unknown_user`: no profile for this id")},
            parameters=[_USER, {"name": "expose", "in": "query", "schema": {"type": "string"},
                                "description": "`1` or `true`: record the user's exposures to every experiment"}],
        ),  # fmt: skip
        "/v1/segments/{name}": _op(
            "getSegmentPage", "One page of a segment's members (SSCAN semantics)",
            {"200": {"description": "a page; `next_cursor` `0` when done", "content": json_content(schema_ref("SegmentPage"))},
             "400": _error("`bad_query`: cursor or count out of range")},
            parameters=[
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                 "description": "the segment, e.g. `interest:shoes` (may contain `/`)", "example": "interest:shoes"},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "default": "0"},
                 "description": "`0` to start, then the `next_cursor` of the previous page (opaque)"},
                {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                 "description": "a hint, as in Redis"},
            ],
        ),  # fmt: skip
        "/v1/content/{user_id}/{slot}": _op(
            "getContent", "Open-time content of a slot for a user; records the user's exposures",
            {"200": {"description": "the rendered slot, or its data with format=json",
                     "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": schema_ref("ContentData")}}},
             "400": _error("`bad_query`: format is not html or json"),
             "404": _error("`unknown_slot`: no template for this slot"),
             "500": _error("`template_error` (the template failed) or `internal_error`")},
            parameters=[_USER, {"name": "slot", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                                "example": "recommendations", "description": "a template name: cart, recommendations, fallback or your own"},
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "json"], "default": "html"}}],
        ),  # fmt: skip
        "/healthz": _op(
            "healthz", "Whether Redis answers",
            {"200": {"description": "Redis answers", "content": json_content(schema_ref("Health"))},
             "503": {"description": "Redis does not answer", "content": json_content(schema_ref("Health"))}},
            auth=False,
        ),  # fmt: skip
        "/metrics": _op(
            "metrics", "Prometheus metrics (text exposition format)",
            {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            auth=False,
        ),  # fmt: skip
        "/openapi.json": _op(
            "openapi", "This document",
            {"200": {"description": "the OpenAPI 3.1 document", "content": json_content({"type": "object"})}},
            auth=False,
        ),  # fmt: skip
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token of LIVEPROFILE_API_TOKENS"},
        },
        "responses": {
            "Unauthorized": {
                "description": "`unauthorized`: no bearer token, or an unknown one",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="liveprofile"'}},
                "content": json_content(schema_ref("Error")),
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "a stable code"},
                    "message": {"type": "string", "description": "for people; may change"},
                },
                "additionalProperties": False,
            },
            "Profile": profile_schema(),
            "SegmentPage": {
                "type": "object",
                "required": ["segment", "members", "next_cursor"],
                "properties": {
                    "segment": {"type": "string"},
                    "members": {"type": "array", "items": {"type": "string"}},
                    "next_cursor": {"type": "string", "description": "`0`: the last page"},
                },
                "additionalProperties": False,
            },
            "ContentData": {
                "type": "object",
                "description": "the template variables of the slot",
                "required": ["slot", "user_id", "known", "profile", "experiments", "cart", "cart_value",
                             "top_category", "products", "fallback"],  # fmt: skip
                "properties": {
                    "slot": {"type": "string"},
                    "user_id": {"type": "string"},
                    "known": {"type": "boolean", "description": "whether the user has a profile"},
                    "profile": {"type": "object", "description": "the profile as /v1/profiles answers it, without experiments"},
                    "experiments": {"type": "object", "additionalProperties": {"type": "string"}},
                    "cart": {"type": "array", "items": {"type": "object"}},
                    "cart_value": {"type": "string"},
                    "top_category": {"type": ["string", "null"]},
                    "products": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "fallback": {"type": "boolean"},
                },
            },
            "Health": HEALTH_SCHEMA,
        },
    },
}


def document_bytes() -> bytes:
    """:data:`DOCUMENT` as JSON.

    >>> orjson.loads(document_bytes())["paths"]["/v1/profiles/{user_id}"]["get"]["security"]
    [{'bearer': []}]
    """
    return orjson.dumps(DOCUMENT)
