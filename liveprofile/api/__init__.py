"""Profile and content API: profiles, segments and open-time content served from Redis.

Modules:

===============  ============================================================
``config``       tokens, templates directory, experiments (``LIVEPROFILE_API_*``)
``experiments``  deterministic variant assignment, exposures, the report
``content``      slot data (cart, recommendations, bestsellers), sandboxed templates
``app``          the ASGI app (plain, no framework), its routing table and :func:`~liveprofile.api.app.serve`
``openapi``      the OpenAPI 3.1 document served at ``/openapi.json``
``cli``          :func:`add_commands`: ``api`` and ``experiments report NAME``
===============  ============================================================
"""

from liveprofile.api.cli import add_commands

__all__ = ["add_commands"]
