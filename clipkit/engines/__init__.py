"""Engines: where the runner's decode → predict steps execute. ``local`` is :func:`clipkit.runner.run` (this
process and its decoding workers); ``ray`` is :mod:`clipkit.engines.ray` (Ray Data)."""

ENGINES = ("local", "ray")
