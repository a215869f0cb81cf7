"""SES4xx: sessions shared across threads, processes and requests."""

from __future__ import annotations
