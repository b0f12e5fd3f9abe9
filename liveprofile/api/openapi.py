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
_SLOT = {"name": "slot", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
         "example": "recommendations", "description": "a template name: cart, recommendations, fallback or your own"}  # fmt: skip
_NO_STORE = {"Cache-Control": {"schema": {"type": "string"}, "description": "`private, no-store, max-age=0`: per-user content"}}
_SIGNED = [
    {"name": "user", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}, "description": "the user id the URL was signed for"},
    {"name": "exp", "in": "query", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}, "description": "expiry, Unix seconds"},
    {"name": "sig", "in": "query", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
     "description": "hex HMAC-SHA256 of `lpc1|{slot}|{format}|{exp}|{user}` (docs/content.md)"},
]  # fmt: skip
_FORBIDDEN = _error("`signature_missing`, `bad_signature`, `expired` or `signing_not_configured`: the signed URL is refused")


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
        "/v1/audiences": _op(
            "listAudiences", "The audiences of the definitions file, each with its size now",
            {"200": {"description": "the audiences (none without a definitions file)", "content": json_content(schema_ref("AudienceList"))}},
        ),  # fmt: skip
        "/v1/audiences/{name}/members": _op(
            "getAudienceMembers", "One page of an audience's members (SSCAN semantics over the user groups)",
            {"200": {"description": "a page; `next_cursor` `0` when done", "content": json_content(schema_ref("AudiencePage"))},
             "400": _error("`bad_query`: not a cursor this API returned, or count < 1"),
             "404": _error("`unknown_audience`: the definitions file names no such audience")},
            parameters=[
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "example": "vip"},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "default": "0"},
                 "description": "`0` to start, then the `next_cursor` of the previous page (opaque)"},
                {"name": "count", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 100},
                 "description": "a hint, as in Redis; more than 1000 is taken as 1000"},
            ],
        ),  # fmt: skip
        "/v1/profiles/{user_id}/audiences": _op(
            "getProfileAudiences", "The user's audiences and computed traits (a merged id answers for the surviving profile)",
            {"200": {"description": "the memberships", "content": json_content(schema_ref("ProfileAudiences"))},
             "404": _error("`unknown_user`: no profile for this id")},
            parameters=[_USER],
        ),  # fmt: skip
        "/v1/content/{user_id}/{slot}": _op(
            "getContent", "Open-time content of a slot for a user; records the user's exposures",
            {"200": {"description": "the rendered slot, or its data with format=json",
                     "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": schema_ref("ContentData")}}},
             "400": _error("`bad_query`: format is not html or json"),
             "404": _error("`unknown_slot`: no template for this slot"),
             "500": _error("`template_error` (the template failed) or `internal_error`")},
            parameters=[_USER, _SLOT,
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "json", "png"], "default": "html"}}],
        ),  # fmt: skip
        "/v1/content-urls/{user_id}": _op(
            "mintContentUrls", "Signed, expiring content URLs of a user's slot (to put in an email)",
            {"200": {"description": "the URLs", "content": json_content(schema_ref("ContentUrls"))},
             "400": _error("`bad_query`: ttl out of range"),
             "404": _error("`unknown_slot`: no template for this slot"),
             "409": _error("`signing_not_configured`: LIVEPROFILE_CONTENT_SIGNING_KEY is empty")},
            parameters=[_USER,
                        {"name": "slot", "in": "query", "schema": {"type": "string", "default": "recommendations"}},
                        {"name": "ttl", "in": "query", "schema": {"type": "string"},
                         "description": "lifetime, e.g. `7d` (default and maximum LIVEPROFILE_CONTENT_URL_TTL)"}],
        ),  # fmt: skip
        "/c/{slot}": _op(
            "getSignedContent", "A slot through a signed URL (no bearer token): what an email embeds; records exposures",
            {"200": {"description": "the slot as HTML, a PNG image or its data", "headers": _NO_STORE,
                     "content": {"text/html": {"schema": {"type": "string"}}, "image/png": {"schema": {"type": "string", "format": "binary"}},
                                 "application/json": {"schema": schema_ref("ContentData")}}},
             "403": _FORBIDDEN,
             "404": _error("`unknown_slot`: no template for this slot")},
            auth=False,
            parameters=[_SLOT, {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "png", "json"], "default": "html"}}, *_SIGNED],
        ),  # fmt: skip
        "/c/{slot}/click": _op(
            "clickSignedContent", "Redirect to the url of the i-th product of a user's slot (a link in an email)",
            {"302": {"description": "to the product's url", "headers": {"Location": {"schema": {"type": "string"}}, **_NO_STORE},
                     "content": json_content({"type": "object", "properties": {"location": {"type": "string"}}})},
             "400": _error("`bad_query`: i is not an index"),
             "403": _FORBIDDEN,
             "404": _error("`no_product`: no i-th product with a url, or `unknown_slot`")},
            auth=False,
            parameters=[_SLOT, *_SIGNED, {"name": "i", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0},
                                          "description": "0-based product index (not signed)"}],
        ),  # fmt: skip
        "/debugger": _op(
            "debuggerPage", "The source debugger page (static HTML: it asks for a token and holds no data)",
            {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}},
            auth=False,
        ),  # fmt: skip
        "/v1/debugger/ticket": _op(
            "mintDebuggerTicket", "A short-lived ticket that admits to the debugger's event stream (an EventSource sends no header)",
            {"200": {"description": "the ticket and its expiry", "content": json_content(schema_ref("DebuggerTicket"))}},
        ),  # fmt: skip
        "/v1/debugger/events": _op(
            "debuggerEvents",
            "The source debugger's events: a server-sent-events stream (Accept: text/event-stream) of the collector's "
            "redacted tap and the profile changes, or the newest tap entries as JSON; the bearer token or a ticket",
            {"200": {"description": "the stream, or the newest entries",
                     "content": {"text/event-stream": {"schema": {"type": "string"}},
                                 "application/json": {"schema": schema_ref("DebuggerEvents")}}},
             "503": _error("`too_many_streams`: the API serves its most debugger streams already")},
            parameters=[{"name": "ticket", "in": "query", "schema": {"type": "string"},
                         "description": "a ticket of /v1/debugger/ticket, instead of the bearer token"}],
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
            "AudienceList": {
                "type": "object",
                "required": ["audiences"],
                "properties": {"audiences": {"type": "array", "items": {
                    "type": "object", "required": ["name", "description", "when", "size"],
                    "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                                   "when": {"type": "string", "description": "the condition, in canonical form"},
                                   "size": {"type": "integer", "minimum": 0, "description": "members now"}}}}},
            },  # fmt: skip
            "AudiencePage": {
                "type": "object",
                "required": ["audience", "members", "next_cursor"],
                "properties": {
                    "audience": {"type": "string"},
                    "members": {"type": "array", "items": {"type": "string"}},
                    "next_cursor": {"type": "string", "description": "`0`: the last page"},
                },
            },
            "ProfileAudiences": {
                "type": "object",
                "required": ["user_id", "audiences", "computed"],
                "properties": {
                    "user_id": {"type": "string"},
                    "audiences": {"type": "array", "items": {"type": "string"}, "description": "sorted"},
                    "computed": {"type": "object", "description": "computed trait name -> value"},
                },
            },
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
            "ContentUrls": {
                "type": "object",
                "required": ["user_id", "slot", "exp", "expires_at", "html", "png", "json", "click"],
                "properties": {
                    "user_id": {"type": "string"}, "slot": {"type": "string"},
                    "exp": {"type": "integer", "description": "expiry, Unix seconds"}, "expires_at": {"type": "string"},
                    "html": {"type": "string"}, "png": {"type": "string"}, "json": {"type": "string"},
                    "click": {"type": "array", "items": {"type": "string"}, "description": "one redirect URL per product position"},
                },
                "additionalProperties": False,
            },  # fmt: skip
            "DebuggerTicket": {
                "type": "object", "required": ["ticket", "exp"], "additionalProperties": False,
                "properties": {"ticket": {"type": "string"}, "exp": {"type": "integer", "description": "expiry, Unix seconds"}},
            },  # fmt: skip
            "DebuggerEvents": {
                "type": "object", "required": ["events"], "additionalProperties": False,
                "properties": {"events": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"},
                                                                      "description": "one tapped event (docs/debugger.md)"}}},
            },  # fmt: skip
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
