"""sessionlint: find SQLAlchemy session, connection and pool misuse."""

__version__ = "0.1.0"
