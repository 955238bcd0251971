"""The engine: one run of a pipeline, pull -> stage -> profile -> segment -> map -> diff ->
push -> ack, and what reads its results back (status, reports, one person's plan).

A layer above the core (``crmsync``: the vocabulary and the contracts), the state store,
the mapping files and the connectors, which it puts together; ``cli``, ``scheduler`` and
``service`` use it.
"""
