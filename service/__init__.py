"""crmsync as a long-running service: what ``crmsync serve`` adds around the runs.

A layer above the core, the connectors and the state store: the scheduler
(``scheduler.py``) and the CLI's ``serve`` use it; nothing below imports it.
"""
