"""The vendors' published API contracts, as the fake vendors (:mod:`tests.sync.fakes`) check them.

**Klaviyo** publishes an OpenAPI 3.0 document (https://github.com/klaviyo/openapi,
``openapi/stable.json``). ``klaviyo-2024-10-15.json`` is that document at commit
``023d5a38b94d2a96ba3b8fa834b159af498931dc`` (the last one of revision ``2024-10-15``, the
revision :class:`liveprofile.sync.config.DestinationConfig` sends), trimmed to the operations the
Klaviyo destination calls and the components they reference (``x-liveprofile-source`` in the file
says so; nothing else was edited). :class:`KlaviyoContract` validates a request's headers and body
(and the fake's own answers) against it with :mod:`jsonschema`; OpenAPI 3.0's ``nullable`` is
read as JSON Schema's ``"null"`` type, the one dialect difference these schemas use.

Rules a schema cannot say but the operation's description does (Klaviyo's deletion job takes
*exactly one* of ``email``, ``phone_number`` or ``id``) are checked by the fake next to the schema.

**Braze** publishes no machine-readable contract; its endpoint pages' rules are encoded in the
fake itself (:data:`tests.sync.fakes.BRAZE_DOCS` names the pages).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["KlaviyoContract", "klaviyo", "KLAVIYO_FILE"]

KLAVIYO_FILE = Path(__file__).with_name("klaviyo-2024-10-15.json")


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema (``type: [t, "null"]``), recursively."""
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items()}
        if out.pop("nullable", False) is True:
            if "type" in out:
                t = out["type"]
                out["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
            elif "$ref" in out:
                out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


class KlaviyoContract:
    """Klaviyo's OpenAPI document of one revision: operations by (method, path)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.revision: str = doc["info"]["version"]
        self._components = _nullable(copy.deepcopy(doc["components"]))
        self._ops: list[tuple[str, re.Pattern[str], str, dict[str, Any]]] = []
        for template, ops in doc["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            for method, op in ops.items():
                self._ops.append((method.upper(), rx, template, op))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """(path template, operation) of a request path (query string ignored), or None."""
        path = path.split("?", 1)[0]
        for m, rx, template, op in self._ops:
            if m == method.upper() and rx.match(path):
                return template, op
        return None

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator({**_nullable(schema), "components": self._components})

    def schema_errors(self, schema: dict[str, Any], doc: Any) -> list[str]:
        """Every violation of ``schema`` (a schema of this document) by ``doc``, as readable lines."""
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in self._validator(schema).iter_errors(doc)]  # fmt: skip

    def request_errors(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> list[str]:
        """What is wrong with one request (lower-case ``headers``): unknown operation, a missing or wrong
        required header (``revision`` must be this revision; ``Authorization`` the API-key scheme),
        the content type, or the body against the operation's request schema."""
        found = self.operation(method, path)
        if found is None:
            return [f"no operation {method} {path} in Klaviyo's API {self.revision}"]
        template, op = found
        errs: list[str] = []
        for p in op.get("parameters", []):
            if p.get("in") == "header" and p.get("required") and p["name"].lower() not in headers:
                errs.append(f"{template}: missing required header {p['name']}")
        if headers.get("revision", self.revision) != self.revision:
            errs.append(f"revision {headers.get('revision')!r} is not the contract's {self.revision}")
        if not headers.get("authorization", "").startswith("Klaviyo-API-Key "):
            errs.append("Authorization is not `Klaviyo-API-Key <private key>` (securitySchemes.Klaviyo-API-Key)")
        rb = op.get("requestBody")
        if rb is None:
            return errs
        ctype = headers.get("content-type", "").split(";")[0].strip()
        if ctype not in rb["content"]:
            errs.append(f"{template}: content-type {ctype!r}, the operation takes {sorted(rb['content'])}")
            return errs
        try:
            doc = json.loads(body or b"")
        except ValueError:
            return [*errs, f"{template}: body is not JSON"]
        errs += [f"{template}: {e}" for e in self.schema_errors(rb["content"][ctype]["schema"], doc)]
        return errs

    def response_errors(self, method: str, path: str, status: int, body: bytes) -> list[str]:
        """What is wrong with an answer (used to check the fake's own answers against the contract)."""
        found = self.operation(method, path)
        if found is None:
            return [f"no operation {method} {path}"]
        template, op = found
        resp = op["responses"].get(str(status)) or op["responses"].get(f"{str(status)[0]}XX")
        if resp is None:
            return [f"{template}: status {status} not documented"]
        content = resp.get("content")
        if not content:
            return []
        doc = json.loads(body)
        (media,) = content.values()
        return [f"{template} {status}: {e}" for e in self.schema_errors(media["schema"], doc)]


@cache
def klaviyo() -> KlaviyoContract:
    """The committed Klaviyo contract (loaded once)."""
    return KlaviyoContract(json.loads(KLAVIYO_FILE.read_text()))
