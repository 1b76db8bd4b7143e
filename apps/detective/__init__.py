"""Model detective: what an unknown model is, from its file headers alone (see apps/detective/report.py)."""

from apps.detective.headers import DetectiveError
from apps.detective.report import Report, inspect_model

__all__ = ["DetectiveError", "Report", "inspect_model"]
