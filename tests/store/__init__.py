"""Tests of liveprofile.store against a real redis-server."""
