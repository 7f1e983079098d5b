"""The jobs' default watermarks and window lengths: the jobs run with them unless the spec's
arguments say otherwise, and the soak and chaos checks judge lateness by the same numbers."""

from __future__ import annotations

from streamops.contract.orders import REVENUE_WINDOW_SECONDS

ORDERS_WATERMARK = "10 seconds"
ORDERS_WINDOW_SECONDS = REVENUE_WINDOW_SECONDS
ALERTS_WATERMARK = "2 minutes"
VITALS_WATERMARK = "30 seconds"
VITALS_WINDOW_SECONDS = 60
JOINS_ORDERS_WATERMARK = "1 minute"
JOINS_PAYMENTS_WATERMARK = "3 minutes"
JOINS_WINDOW_SECONDS = 60
# How long after its order a payment still counts, and how early (clock skew) it may come.
JOINS_PAY_WITHIN = "15 minutes"
JOINS_PAID_EARLY_TOLERANCE = "1 minute"
