"""Development and evaluation tools: the deterministic stream generator with its independent
expected profiles (:mod:`.generate`), real order histories (:mod:`.datasets`), and the one-command
local demo (:mod:`.demo`).

May import anything below the services; the demo starts services as processes, never imports them.
"""
