"""Audit trail written next to the request's own unit of work."""
from sqlalchemy.orm import scoped_session

from .db import SessionLocal
from .models import AuditEvent

# misuse: a second thread-local registry whose remove() is called nowhere, so each
# thread that ever audits something keeps its session (and identity map) forever.
audit_session = scoped_session(SessionLocal)


def record(action: str, ref: object) -> None:
    audit_session.add(AuditEvent(action=action, ref=str(ref)))
    audit_session.commit()
