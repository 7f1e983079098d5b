"""Shared parts of every streaming job: the session, sources, sinks and listeners."""
