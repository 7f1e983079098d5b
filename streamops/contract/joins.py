"""The joins pipeline's payment statuses, shared by the job and the checks (its defaults are in
streamops.contract.job_defaults)."""

from __future__ import annotations

# Lowest first: the rank a status has when choosing one payment among several.
STATUS_RANKING = ("failed", "authorized", "captured")
