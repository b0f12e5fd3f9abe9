"""The buffer entry's top-level fields as msgspec decodes them in C: the fast path's struct.

:func:`decode_wire` turns JSON bytes into a :class:`Wire` (or raises ``msgspec.DecodeError``);
:func:`operators.events._fast_check` reads it. Its own module because mypyc leaves it out: a
msgspec ``Struct`` is built by msgspec's metaclass (it must stay a Python class) and its
``msgspec.field(default=None)`` defaults are typed ``None`` to mypy, a type compiled code would
check. See :mod:`operators.events` for why each field is typed as it is.

>>> decode_wire(b'{"type": "track", "messageId": "m1", "event": "Viewed"}').event
'Viewed'
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Wire", "decode_wire", "TRUST_FIELD"]

#: the envelope's trust stamp (``operators.events.TRUST_FIELD`` is this one)
TRUST_FIELD = "_trust"


class Wire(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    # in the order events usually carry these keys (the collector's entries: the client's order,
    # then receivedAt): msgspec looks a key up among the fields from the one after the last
    # found, so this order finds each at the first try; any order decodes the same
    type: str
    messageId: str  # noqa: N815 - the wire names
    userId: str | None = None  # noqa: N815
    anonymousId: str | None = None  # noqa: N815
    timestamp: Any = None
    context: dict[str, Any] | None = None
    event: Any = None
    name: Any = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    receivedAt: Any = None  # noqa: N815
    sentAt: Any = None  # noqa: N815
    originalTimestamp: Any = None  # noqa: N815
    previousId: Any = None  # noqa: N815
    groupId: Any = None  # noqa: N815
    trust: Any = msgspec.field(default=None, name=TRUST_FIELD)
    # the SDKs' other envelope fields (Segment analytics.js / analytics-python, RudderStack):
    # decoded only so that their values are checked as orjson checks them; not read
    integrations: Any = None
    channel: Any = None
    version: Any = None
    writeKey: Any = None  # noqa: N815
    metadata_: Any = msgspec.field(default=None, name="_metadata")
    category: Any = None
    rudderId: Any = None  # noqa: N815
    request_ip: Any = None
    requestId: Any = None  # noqa: N815
    projectId: Any = None  # noqa: N815


decode_wire = msgspec.json.Decoder(Wire).decode
