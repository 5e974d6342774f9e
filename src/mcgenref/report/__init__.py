"""Self-contained HTML reports of ``mcgenref segment`` and ``mcgenref evaluate`` folders."""

from mcgenref.report.html import (
    REPORT_NAME,
    write_evaluation_report,
    write_segment_report,
)

__all__ = ["REPORT_NAME", "write_evaluation_report", "write_segment_report"]
