"""The compliance review page (``/review``): log-in, calls, details, summary, exports."""

from cds.review.views import bp, csrf

__all__ = ["bp", "csrf"]
