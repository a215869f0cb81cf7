"""SES5xx: engines and pools (engine per call, MySQL pool_recycle, unbounded pools)."""

from __future__ import annotations
