"""The jobs' default watermarks and window lengths: the jobs run with them unless the spec's
arguments say otherwise, and the soak and chaos checks judge lateness by the same numbers."""

from __future__ import annotations

from streamops.contract.joins import DEFAULT_PAID_EARLY_TOLERANCE, DEFAULT_PAY_WITHIN
from streamops.contract.orders import REVENUE_WINDOW_SECONDS

ORDERS_WATERMARK = "10 seconds"
ORDERS_WINDOW_SECONDS = REVENUE_WINDOW_SECONDS
ALERTS_WATERMARK = "2 minutes"
VITALS_WATERMARK = "30 seconds"
VITALS_WINDOW_SECONDS = 60
JOINS_ORDERS_WATERMARK = "1 minute"
JOINS_PAYMENTS_WATERMARK = "3 minutes"
JOINS_WINDOW_SECONDS = 60
JOINS_PAY_WITHIN = DEFAULT_PAY_WITHIN
JOINS_PAID_EARLY_TOLERANCE = DEFAULT_PAID_EARLY_TOLERANCE
