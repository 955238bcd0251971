"""Segment reports: what each segment is worth, buys and loses, from the state database.

``collect`` adds people up into a ``crmsync.insights.SegmentReport`` (figures only);
``terminal`` and ``html`` render it; the CLI wires ``state.report_reads`` in as the
``ReportSource``, so this package reads through that protocol and imports no state module
itself.
"""

from __future__ import annotations

from engine.reports.collect import Collector, person_label, report_context, segment_report

__all__ = ["Collector", "person_label", "report_context", "segment_report"]
