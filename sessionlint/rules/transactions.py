"""SES2xx: transactions (rollback after failed flush, writes never committed)."""

from __future__ import annotations
