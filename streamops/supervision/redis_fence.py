"""The Redis mirror of a checkpoint lease's fencing token: ``streamops:fence:<lease key>``.

MariaDB's ``pipeline_leases`` row is the authority. Redis cannot take part in a MariaDB
transaction, so the token is mirrored into one Redis key that every fenced Redis write of a job
checks inside its own MULTI/EXEC (WATCH on the key; see ``streamops.supervision.fence``). The mirror
only ever moves forward (:data:`RAISE_SCRIPT`): the launcher raises it to the new token before a
job starts, and a job whose token is newer than the mirror (never raised, or lost with Redis'
data) raises it itself once MariaDB confirms the token is still the lease's.
"""

from __future__ import annotations

from typing import Any

from streamops.contract.redis_keys import FENCE_KEY_PREFIX

# KEYS[1] the mirror, ARGV[1] a token: set it when the mirror is missing, not a number or older;
# return the mirror's value afterwards.
RAISE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '')
local token = tonumber(ARGV[1])
if current == nil or current < token then
  redis.call('SET', KEYS[1], ARGV[1])
  return token
end
return current
"""


def fence_key(lease_key: str) -> str:
    return f"{FENCE_KEY_PREFIX}{lease_key}"


def raise_mirror(client: Any, lease_key: str, token: int) -> int:
    """Move the mirror of ``lease_key`` forward to ``token`` (never back); returns its value."""
    return int(client.eval(RAISE_SCRIPT, 1, fence_key(lease_key), str(token)))


def parse_token(value: Any) -> int | None:
    """The mirror's value as a token; None when missing or not a whole number."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text) if text.isdigit() else None
