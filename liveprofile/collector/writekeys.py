"""Write-key authentication of the Segment endpoints, as Segment does it.

Contract: the write key is the HTTP Basic user name (empty password), or ``writeKey`` in the
body when there is no Basic header. It is compared in constant time with every configured key
(each one is tried, so the time does not tell which matched). Refusals are 401 ``unauthorized``
(:class:`~liveprofile.asgi.HTTPError`), counted by reason in
``liveprofile_collector_auth_failures_total``: ``malformed_authorization`` (Basic credentials that
are not base64), ``missing_write_key``, ``unknown_write_key``. The key is never logged, put in a
label or echoed. The answer is the rate-limit bucket of the request (the presented key, or one
shared bucket when no key is configured: the demo) and the key's trust level: ``server`` for a
key in ``LIVEPROFILE_WRITE_KEYS``, ``browser`` for one in ``LIVEPROFILE_BROWSER_WRITE_KEYS``
(accepted alike; the events of a browser key are stamped so, see
:func:`liveprofile.buffer.ingest.prepare`). A key in both lists is a browser key.

May import: :mod:`liveprofile.asgi`, :mod:`liveprofile.buffer`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter

from liveprofile.asgi import HTTPError
from liveprofile.buffer.ingest import BROWSER, SERVER

__all__ = ["WriteKeys"]


class WriteKeys:
    """The configured write keys; :meth:`authenticate` checks one request."""

    def __init__(self, keys: Sequence[str], failures: Counter, browser_keys: Sequence[str] = ()) -> None:
        self._keys = [k.encode() for k in keys]
        self._browser = [k.encode() for k in browser_keys]
        self._failures = failures

    def authenticate(self, headers: dict[bytes, bytes], doc: dict[str, Any]) -> bytes:
        """The presented write key if it is a configured one (constant time); 401 otherwise."""
        return self.check(headers, doc)[0]

    def check(self, headers: dict[bytes, bytes], doc: dict[str, Any]) -> tuple[bytes, str]:
        """(rate-limit bucket, trust level) of the presented write key (constant time); 401 otherwise."""
        presented: bytes | None = None
        auth = headers.get(b"authorization")
        if auth and auth[:6].lower() == b"basic ":
            try:
                presented = base64.b64decode(auth[6:].strip(), validate=True).split(b":", 1)[0]
            except (ValueError, binascii.Error):
                self._failures.labels("malformed_authorization").inc()
                raise HTTPError(401, "unauthorized", "malformed Basic authorization header") from None
        if not presented:
            wk = doc.get("writeKey")
            if isinstance(wk, str):
                presented = wk.encode("utf-8", "surrogatepass")
        if not presented:
            self._failures.labels("missing_write_key").inc()
            raise HTTPError(401, "unauthorized", "a write key is required (Basic auth user name, or writeKey in the body)")
        ok = browser = False
        for key in self._keys:  # constant time per key, and every key is tried
            ok |= hmac.compare_digest(presented, key)
        for key in self._browser:
            browser |= hmac.compare_digest(presented, key)
        configured = bool(self._keys or self._browser)
        if not (ok or browser) and configured:
            self._failures.labels("unknown_write_key").inc()
            raise HTTPError(401, "unauthorized", "unknown write key")
        return (presented if configured else b""), (BROWSER if browser else SERVER)  # no keys (demo): one shared bucket
