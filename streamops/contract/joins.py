"""The joins pipeline's defaults and payment statuses, shared by the job and the checks."""

from __future__ import annotations

# How long after its order a payment still counts, and how early (clock skew) it may come.
DEFAULT_PAY_WITHIN = "15 minutes"
DEFAULT_PAID_EARLY_TOLERANCE = "1 minute"
# Lowest first: the rank a status has when choosing one payment among several.
STATUS_RANKING = ("failed", "authorized", "captured")
