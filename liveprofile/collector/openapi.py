"""The collector's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Contract: :data:`DOCUMENT` describes exactly the routes of :data:`liveprofile.collector.app.ROUTES`
(every path and method, no other; ``tests/collector/test_openapi.py`` checks both ways against a
running collector, validates the document with ``openapi-spec-validator`` and real answers
against its schemas). It is data, written here by hand from the endpoint modules' contracts; the
rejection reasons come from :class:`operators.events.Reason` and the event types from
:data:`operators.events.EVENT_TYPES`, so they cannot drift from the validation.

The document is public, as Segment's API reference is: ``/openapi.json`` needs no write key (it
holds no secret and nothing about this deployment's configuration — webhook sources, limits and
keys stay out of it). :func:`document_bytes` is the JSON the app builds once, at construction.

May import: :mod:`operators` and the collector's own modules.
"""

from __future__ import annotations

from typing import Any

import orjson

from liveprofile.asgi import HEALTH_SCHEMA, json_content, schema_ref
from liveprofile.collector.browser import PIXEL_API_PREFIX, SOURCE_CONFIG_PATHS
from liveprofile.collector.config import SOURCE_RE
from liveprofile.collector.ingest import SHORT_KINDS
from liveprofile.collector.signing import PIXEL_PATH, SIGNATURE_HEADER
from operators.events import EVENT_TYPES, Reason

__all__ = ["DOCUMENT", "document_bytes", "SINGLE_OPERATIONS"]


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": json_content(schema_ref("Error"))}
    if retry_after:
        out["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return out


_NONBLANK = {"type": "string", "pattern": "\\S"}
_ID = {
    "type": ["string", "integer", "null"], "maxLength": 256,
    "description": "a string of at most 256 characters (an integer is taken as its decimal string); blank or null is absent",
}  # fmt: skip
_GIVEN_ID = {"anyOf": [{"type": "integer"}, {**_NONBLANK, "maxLength": 256}]}
_TIME = {"type": ["string", "number"], "description": "ISO 8601, or epoch seconds as a number"}

#: the fields of a Segment event the collector reads (more are kept as sent)
_EVENT_FIELDS: dict[str, Any] = {
    "type": {"type": "string", "enum": sorted(EVENT_TYPES), "description": "on /v1/{type} the path's type replaces it"},
    "userId": _ID,
    "anonymousId": _ID,
    "messageId": {"type": ["string", "integer", "null"], "maxLength": 256, "description": "the de-duplication key; derived from the event when absent or empty"},
    "event": {"type": "string", "description": "track: the event name (required, non-blank)"},
    "name": {"type": "string", "description": "page and screen: the page or screen name"},
    "previousId": {**_ID, "description": "alias: the previous id (required, and alias needs userId)"},
    "groupId": {"type": ["string", "integer", "null"]},
    "properties": {"type": ["object", "null"]},
    "traits": {"type": ["object", "null"], "description": "identify: traits.email, when present, must be a valid address"},
    "context": {"type": ["object", "null"]},
    "integrations": {"type": ["object", "null"]},
    "timestamp": _TIME,
    "originalTimestamp": _TIME,
    "sentAt": _TIME,
    "writeKey": {"type": "string", "description": "the write key, when there is no Basic authorization (never stored)"},
}

#: what each event type needs beyond an identity (userId or anonymousId, non-blank)
_TYPE_RULES: dict[str, dict[str, Any]] = {
    "track": {"required": ["event"], "properties": {"event": _NONBLANK}},
    "identify": {}, "page": {}, "screen": {}, "group": {},
    "alias": {"required": ["previousId", "userId"], "properties": {"previousId": _GIVEN_ID, "userId": _GIVEN_ID}},
}  # fmt: skip

#: the single-event endpoints ``/v1/{type}`` (their request schema is the type's component)
SINGLE_OPERATIONS = tuple(_TYPE_RULES)

_SCHEMA_NAME = {t: t.capitalize() for t in _TYPE_RULES}

_INGEST_RESPONSES: dict[str, Any] = {
    "400": _error("a request-level problem (`malformed_json`, `not_object`, `missing_batch`, `malformed_gzip`, "
                  "`client_disconnected`), or on a single-event endpoint the event's rejection reason "
                  "(the event is also dead-lettered)"),  # fmt: skip
    "401": _error("`unauthorized`: no write key, an unknown one, or malformed Basic credentials"),
    "413": _error("`request_too_large` (LIVEPROFILE_MAX_REQUEST_BYTES, also after gzip), `too_many_events` "
                  "(LIVEPROFILE_MAX_BATCH_EVENTS), or on a single-event endpoint `event_too_large`"),  # fmt: skip
    "415": _error("`unsupported_encoding`: a Content-Encoding other than gzip or identity"),
    "429": _error("`rate_limited`: the write key is over its rate limit; nothing was kept", retry_after=True),
    "503": _error("the buffer's condition: `backlog_full` (LIVEPROFILE_MAX_BACKLOG), `buffer_out_of_memory` (Redis at "
                  "maxmemory), `buffer_read_only` (a read-only replica) or `buffer_unavailable` (unreachable): "
                  "nothing was kept, retry later", retry_after=True),
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}, "text/plain": {"schema": schema}}}


def _single(kind: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": kind,
            "summary": f"One {kind} call (Segment's /v1/{kind})",
            "tags": ["Segment tracking API"],
            "security": [{"writeKey": []}],
            "parameters": [{"$ref": "#/components/parameters/ContentEncoding"}],
            "requestBody": _body(schema_ref(_SCHEMA_NAME[kind])),
            "responses": {
                "200": {"description": "appended to the buffer (acknowledged by it)", "content": json_content(schema_ref("Success"))},
                **_INGEST_RESPONSES,
            },
        }
    }


_PREFLIGHT = {
    "operationId": "",
    "summary": "CORS preflight (browsers): a grant for an origin in LIVEPROFILE_CORS_ORIGINS",
    "tags": ["Browsers"],
    "security": [],
    "responses": {
        "204": {"description": "an allowed origin's grant (Access-Control-Allow-Origin echoed, credentials allowed); "
                               "without an Origin header, `Allow`"},
        "403": _error("`cors_origin_not_allowed`: no grant (the browser does not send the request)"),
    },
}  # fmt: skip


def _preflight(op_id: str, path_param: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {**_PREFLIGHT, "operationId": f"{op_id}Preflight"}
    if path_param is not None:
        out["parameters"] = [path_param]
    return out


_KEY_PARAM = {"name": "writeKey", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "the write key (a browser key)", "example": "not-a-configured-key"}  # fmt: skip
_TYPE_PARAM = {"name": "type", "in": "path", "required": True, "schema": {"type": "string", "enum": list(SINGLE_OPERATIONS)},
               "example": "track"}  # fmt: skip


def _short(letter: str, kind: str) -> dict[str, Any]:
    item = _single(kind) if kind != "batch" else {"post": dict(_BATCH_POST)}
    post = {**item["post"], "operationId": f"{kind}Short", "summary": f"analytics.js's short path of /v1/{kind}"}
    return {"post": post, "options": _preflight(f"{kind}Short")}


_GIF = {"description": "always the 43-byte transparent GIF (`Cache-Control: no-store`)", "content": {"image/gif": {}}}
_PIXEL_PARAMETERS = [
    {"name": "user", "in": "query", "schema": {"type": "string", "maxLength": 256}, "description": "the user id"},
    {"name": "campaign", "in": "query", "schema": {"type": "string", "maxLength": 256}},
    {"name": "email_id", "in": "query", "schema": {"type": "string", "maxLength": 256}},
    {"name": "ts", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "signing time, unix seconds"},
    {"name": "sig", "in": "query", "schema": {"type": "string"}, "description": "hex HMAC-SHA256 (`liveprofile pixel-url`)"},
]

_BATCH_POST: dict[str, Any] = {
    "operationId": "batch",
    "summary": "Several calls in one request (Segment's /v1/batch)",
    "tags": ["Segment tracking API"],
    "security": [{"writeKey": []}],
    "parameters": [{"$ref": "#/components/parameters/ContentEncoding"}],
    "requestBody": _body(schema_ref("Batch")),
    "responses": {
        "200": {
            "description": "every valid event appended; invalid ones dead-lettered and listed in `rejected`",
            "content": json_content(schema_ref("Success")),
        },
        **_INGEST_RESPONSES,
    },
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "liveprofile collector",
        "version": "1",
        "summary": "Segment-compatible tracking API, email-open pixel and signed webhooks",
        "description": (
            "Events are acknowledged (200) only after the buffer acknowledged them. Event-level problems never "
            "fail a batch: the event is dead-lettered and listed in `rejected`. Refusals are "
            '`{"success": false, "error": code, "code": code, "message": text}` and keep nothing of the request. '
            "A path that is not routed answers 404 `not_found`, a routed path asked with another method 405. "
            "This document needs no write key."
        ),
    },
    "tags": [
        {"name": "Segment tracking API"}, {"name": "Browsers"}, {"name": "Email pixel"}, {"name": "Webhooks"}, {"name": "Operations"},
    ],  # fmt: skip
    "paths": {
        **{f"/v1/{kind}": {**_single(kind), "options": _preflight(kind)} for kind in SINGLE_OPERATIONS},
        "/v1/batch": {"post": _BATCH_POST, "options": _preflight("batch")},
        **{f"/v1/{letter}": _short(letter, kind) for letter, kind in SHORT_KINDS.items()},
        "/v1/projects/{writeKey}/settings": {
            "get": {
                "operationId": "segmentSettings",
                "summary": "analytics.js settings (its `cdnURL`): send to this collector, no device-mode destinations",
                "tags": ["Browsers"],
                "security": [{"writeKey": []}],
                "parameters": [_KEY_PARAM],
                "responses": {
                    "200": {"description": "the settings: `integrations[\"Segment.io\"]` with `apiHost` (this Host + /v1) and `protocol`",
                            "content": json_content({"type": "object", "required": ["integrations"]})},
                    "401": _INGEST_RESPONSES["401"],
                },
            },
            "options": _preflight("segmentSettings", _KEY_PARAM),
        },
        **{path: {
            "get": {
                "operationId": "rudderstackSourceConfig" + ("Slash" if path.endswith("/") else ""),
                "summary": "RudderStack JS SDK source config (its `configUrl`): the source enabled, no device-mode destinations",
                "tags": ["Browsers"],
                "security": [{"writeKey": []}],
                "parameters": [{"name": "writeKey", "in": "query", "schema": {"type": "string"},
                                "description": "the write key (or the Basic header)"}],
                "responses": {
                    "200": {"description": "`{\"source\": {\"enabled\": true, \"destinations\": [], ...}}`",
                            "content": json_content({"type": "object", "required": ["source"]})},
                    "401": _INGEST_RESPONSES["401"],
                },
            },
            "options": _preflight("rudderstackSourceConfig" + ("Slash" if path.endswith("/") else "")),
        } for path in SOURCE_CONFIG_PATHS},
        PIXEL_API_PREFIX + "{type}": {
            "get": {
                "operationId": "pixelApi",
                "summary": "Segment's Pixel API: the event in `data` taken as POST /v1/{type} takes it, answered with a GIF",
                "tags": ["Browsers"],
                "security": [{"writeKey": []}],
                "parameters": [
                    _TYPE_PARAM,
                    {"name": "data", "in": "query", "schema": {"type": "string"},
                     "description": "base64 (standard or URL-safe) of one event's JSON with its `writeKey`"},
                ],  # fmt: skip
                "responses": {
                    "200": {"description": "accepted: the 43-byte transparent GIF", "content": {"image/gif": {}}},
                    "400": _error("`malformed_data` (not base64), a request-level problem or the event's rejection reason"),
                    **{k: v for k, v in _INGEST_RESPONSES.items() if k != "400"},
                },
            },
            "options": _preflight("pixelApi", _TYPE_PARAM),
        },
        PIXEL_PATH: {
            "get": {
                "operationId": "pixel",
                "summary": "Email-open pixel: a validly signed request records an `Email Opened` event",
                "tags": ["Email pixel"],
                "security": [],
                "parameters": _PIXEL_PARAMETERS,
                "responses": {"200": _GIF},
            },
            "head": {
                "operationId": "pixelHead",
                "summary": "The pixel's headers; records nothing",
                "tags": ["Email pixel"],
                "security": [],
                "responses": {"200": {"description": "the GIF's headers, no body"}},
            },
        },
        "/v1/webhooks/{source}": {
            "post": {
                "operationId": "webhook",
                "summary": "Signed server-to-server events of a configured source",
                "description": ("A source speaks one signature scheme (LIVEPROFILE_WEBHOOK_SECRETS): liveprofile's, Stripe's, "
                                "Shopify's or Standard Webhooks'; a source with a mapping file takes its platform's own JSON "
                                "payloads, mapped to Segment events (a payload the mapping cannot map is a dead letter, 200)."),
                "tags": ["Webhooks"],
                "security": [{"webhookSignature": []}, {"stripeSignature": []}, {"shopifyHmac": []}, {"standardWebhooks": []}],
                "parameters": [
                    {"name": "source", "in": "path", "required": True, "schema": {"type": "string", "pattern": SOURCE_RE.pattern},
                     "description": "a source configured in LIVEPROFILE_WEBHOOK_SECRETS", "example": "esp"},
                    {"$ref": "#/components/parameters/ContentEncoding"},
                ],  # fmt: skip
                "requestBody": _body({"oneOf": [
                    schema_ref("Batch"), {"allOf": [schema_ref("Event"), {"not": {"required": ["batch"]}}]},
                    {"type": "object", "description": "a platform's payload (a source with a mapping)"},
                ]}),  # fmt: skip
                "responses": {
                    "200": {"description": "appended (at most once per signed delivery), or a redelivery of a platform delivery id already received (`duplicate`, nothing kept)",
                            "content": json_content({"oneOf": [schema_ref("Success"), schema_ref("Duplicate")]})},  # fmt: skip
                    "400": _INGEST_RESPONSES["400"],
                    "401": _error("`missing_signature`, `invalid_signature`, `stale_signature` (outside "
                                  "LIVEPROFILE_WEBHOOK_TOLERANCE) or `replayed_signature` (already received)"),  # fmt: skip
                    "404": _error("`unknown_source`: the source is not configured"),
                    "413": _INGEST_RESPONSES["413"],
                    "415": _INGEST_RESPONSES["415"],
                    "503": _INGEST_RESPONSES["503"],
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Whether Redis answers",
                "tags": ["Operations"],
                "security": [],
                "responses": {
                    "200": {"description": "Redis answers", "content": json_content(schema_ref("Health"))},
                    "503": {"description": "Redis does not answer", "content": json_content(schema_ref("Health"))},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format)",
                "tags": ["Operations"],
                "security": [],
                "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["Operations"],
                "security": [],
                "responses": {"200": {"description": "the OpenAPI 3.1 document", "content": json_content({"type": "object"})}},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "writeKey": {
                "type": "http",
                "scheme": "basic",
                "description": "the write key as the user name, empty password (as Segment); without it, `writeKey` in the body",
            },
            "webhookSignature": {
                "type": "apiKey",
                "in": "header",
                "name": SIGNATURE_HEADER,
                "description": '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with a secret of the source',
            },
            "stripeSignature": {
                "type": "apiKey", "in": "header", "name": "Stripe-Signature",
                "description": "Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`[,v1=...] (a `stripe` scheme source)",
            },
            "shopifyHmac": {
                "type": "apiKey", "in": "header", "name": "X-Shopify-Hmac-Sha256",
                "description": "base64 HMAC-SHA256 of the raw body, with X-Shopify-Webhook-Id (the dedupe key) and X-Shopify-Topic (a `shopify` scheme source)",
            },
            "standardWebhooks": {
                "type": "apiKey", "in": "header", "name": "webhook-signature",
                "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<body>\">` ..., with webhook-id and webhook-timestamp (a `standard` scheme source)",
            },
        },
        "headers": {
            "RetryAfter": {"description": "seconds to wait before retrying", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        },
        "parameters": {
            "ContentEncoding": {
                "name": "Content-Encoding",
                "in": "header",
                "schema": {"type": "string", "enum": ["gzip", "identity"]},
                "description": "gzip bodies are inflated; the inflated size is bounded by LIVEPROFILE_MAX_REQUEST_BYTES",
            },
        },
        "schemas": {
            "EventFields": {
                "type": "object",
                "description": "the fields of a Segment event the collector reads (https://segment.com/docs/connections/spec/); "
                               "others are kept as sent",
                "properties": _EVENT_FIELDS,
            },
            "Identity": {
                "description": "userId or anonymousId, non-blank",
                "anyOf": [{"required": ["userId"], "properties": {"userId": _GIVEN_ID}},
                          {"required": ["anonymousId"], "properties": {"anonymousId": _GIVEN_ID}}],
            },  # fmt: skip
            **{
                _SCHEMA_NAME[t]: {"description": f"a {t} call", "allOf": [schema_ref("EventFields"), schema_ref("Identity"), *([rule] if rule else [])]}
                for t, rule in _TYPE_RULES.items()
            },
            "Event": {
                "description": "an event with its `type` (a batch item, a webhook body)",
                "allOf": [
                    schema_ref("EventFields"),
                    {"required": ["type"]},
                    *({"if": {"properties": {"type": {"const": t}}}, "then": schema_ref(_SCHEMA_NAME[t])} for t in _TYPE_RULES),
                ],
            },
            "Batch": {
                "type": "object",
                "required": ["batch"],
                "properties": {
                    "batch": {
                        "type": "array",
                        "description": "at most LIVEPROFILE_MAX_BATCH_EVENTS (default 5000) events; each needs its `type`",
                        "items": schema_ref("Event"),
                    },
                    "sentAt": {**_TIME, "description": "default of each event's sentAt (clock-skew correction)"},
                    "context": {"type": "object", "description": "default of each event's context"},
                    "integrations": {"type": "object", "description": "default of each event's integrations"},
                    "writeKey": _EVENT_FIELDS["writeKey"],
                },
            },
            "Success": {
                "type": "object",
                "required": ["success"],
                "properties": {
                    "success": {"const": True},
                    "accepted": {"type": "integer", "minimum": 0, "description": "events appended (only when some were rejected)"},
                    "rejected": {"type": "array", "items": schema_ref("Rejected"), "description": "events dead-lettered, in request order"},
                },
                "dependentRequired": {"accepted": ["rejected"], "rejected": ["accepted"]},
                "additionalProperties": False,
            },
            "Duplicate": {
                "type": "object",
                "required": ["success", "duplicate"],
                "properties": {"success": {"const": True}, "duplicate": {"const": True}},
                "additionalProperties": False,
            },
            "Rejected": {
                "type": "object",
                "required": ["messageId", "reason", "message"],
                "properties": {
                    "messageId": {"type": ["string", "null"]},
                    "reason": {"type": "string", "enum": [r.value for r in Reason]},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "Error": {
                "type": "object",
                "required": ["success", "error", "code", "message"],
                "properties": {
                    "success": {"const": False},
                    "error": {"type": "string", "description": "a stable code"},
                    "code": {"type": "string", "description": "the same code, where the Segment/RudderStack SDKs read it"},
                    "message": {"type": "string", "description": "for people; may change"},
                },
                "additionalProperties": False,
            },
            "Health": HEALTH_SCHEMA,
        },
    },
}


def document_bytes() -> bytes:
    """:data:`DOCUMENT` as JSON.

    >>> orjson.loads(document_bytes())["openapi"]
    '3.1.0'
    """
    return orjson.dumps(DOCUMENT)
