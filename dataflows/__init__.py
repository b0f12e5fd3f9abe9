"""The Bytewax dataflow: ``python -m bytewax.run dataflows.profiles:flow``.

Thin wiring around :mod:`operators`: :mod:`.build` assembles the flow from its parts (importable
without building the production flow), :mod:`.profiles` builds the production flow,
:mod:`.parse` is the first step, :mod:`.logic` holds the stateful adapters (keys, timers,
snapshots), :mod:`.outputs` what they hand the sinks, :mod:`.sources` and :mod:`.sinks` the I/O,
:mod:`.clock` the stream clock passed in at build time, :mod:`.metrics` the Prometheus metrics.

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.store`,
:mod:`liveprofile.buffer`; never another service.
"""
