"""SES3xx: scoped_session registries (remove(), async misuse)."""

from __future__ import annotations
