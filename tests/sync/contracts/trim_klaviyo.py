"""Re-make ``klaviyo-<revision>.json`` from Klaviyo's full OpenAPI document (kept for the next revision
or a new operation): ``python -m tests.sync.contracts.trim_klaviyo stable.json COMMIT``.

``stable.json`` is ``openapi/stable.json`` of https://github.com/klaviyo/openapi at ``COMMIT``. The
output keeps the operations in :data:`OPERATIONS` and the components they reference, transitively,
plus ``securitySchemes``; nothing is edited. Add an operation here before an adapter calls it: the
fake Klaviyo refuses every request the committed document does not describe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: the operations the Klaviyo destination calls
OPERATIONS: dict[str, tuple[str, ...]] = {
    "/api/profile-bulk-import-jobs": ("post",),
    "/api/profile-bulk-import-jobs/{job_id}": ("get",),
    "/api/profile-bulk-import-jobs/{id}/import-errors": ("get",),
    "/api/event-bulk-create-jobs": ("post",),
    "/api/profile-import": ("post",),
    "/api/data-privacy-deletion-jobs": ("post",),
    "/api/profile-subscription-bulk-delete-jobs": ("post",),
    "/api/profiles": ("get",),
    "/api/lists/{id}/relationships/profiles": ("post", "delete"),
}


def trim(full: dict[str, Any], commit: str) -> dict[str, Any]:
    """The document reduced to :data:`OPERATIONS` and what they reference."""
    paths = {p: {m: full["paths"][p][m] for m in ms} for p, ms in OPERATIONS.items()}
    found: dict[tuple[str, str], Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str):
                    _, _, section, name = v.split("/")
                    if (section, name) not in found:
                        found[(section, name)] = full["components"][section][name]
                        walk(found[(section, name)])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(paths)
    components: dict[str, dict[str, Any]] = {}
    for (section, name), v in sorted(found.items()):
        components.setdefault(section, {})[name] = v
    components["securitySchemes"] = full["components"].get("securitySchemes", {})
    return {"openapi": full["openapi"], "info": full["info"], "servers": full["servers"],
            "x-liveprofile-source": {"repository": "https://github.com/klaviyo/openapi", "path": "openapi/stable.json",
                                     "commit": commit, "revision": full["info"]["version"],
                                     "trimmed": "only the paths the Klaviyo destination calls, and the components "
                                                "they reference (tests/sync/contracts/README.md)"},
            "paths": paths, "components": components, "security": full.get("security")}  # fmt: skip


def main(argv: list[str]) -> int:
    full = json.loads(Path(argv[0]).read_text())
    out = Path(__file__).with_name(f"klaviyo-{full['info']['version']}.json")
    out.write_text(json.dumps(trim(full, argv[1]), indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
