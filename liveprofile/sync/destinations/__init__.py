"""Email-platform adapters, one module each, behind one contract (:mod:`.base`).

* :mod:`.base` — :class:`Destination` and :class:`Request`: pure request building (vendor limits,
  headers of one attempt, splitting a refused request), plus the value typing shared by adapters.
* :mod:`.webhook`, :mod:`.braze`, :mod:`.klaviyo` — one vendor each; they import only :mod:`.base`
  and :mod:`liveprofile.sync.model`.

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.sync.config`, :mod:`liveprofile.sync.audiences` and
:mod:`liveprofile.sync.model`; never the worker (which imports this package).
"""

from __future__ import annotations

from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.destinations.base import Destination, Request
from liveprofile.sync.destinations.braze import BrazeDestination
from liveprofile.sync.destinations.klaviyo import KlaviyoDestination
from liveprofile.sync.destinations.webhook import WebhookDestination

__all__ = ["Destination", "Request", "make_destination", "DESTINATION_TYPES"]

#: ``LIVEPROFILE_SYNC_*`` destination ``type`` -> its adapter class
DESTINATION_TYPES: dict[str, type[Destination]] = {
    "webhook": WebhookDestination,
    "braze": BrazeDestination,
    "klaviyo": KlaviyoDestination,
}


def make_destination(cfg: DestinationConfig) -> Destination:
    """The adapter for ``cfg.type`` (the config loader only admits the keys of :data:`DESTINATION_TYPES`)."""
    return DESTINATION_TYPES[cfg.type](cfg)
