"""Segment reports' vocabulary: the figures a report holds (``model``) and how money and
shares are written (``fmt``). ``engine.reports`` adds people up into a ``SegmentReport``
and renders it; the CLI wires ``state.report_reads`` in as the ``ReportSource``.
"""

from __future__ import annotations

from crmsync.insights.model import Baseline, PersonRows, ReportSource, SegmentReport

__all__ = ["Baseline", "PersonRows", "ReportSource", "SegmentReport"]
