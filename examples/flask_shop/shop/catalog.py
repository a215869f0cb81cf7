"""Featured-products lookup, from the first version of the shop."""
from sqlalchemy import select

from .db import SessionLocal
from .models import Product

# misuse: one Session instance created at import time and shared by every request
# and thread; it never closes, keeps its connection checked out after the first
# query and serves stale objects from its identity map.
session = SessionLocal()


def featured_products() -> list:
    stmt = select(Product).where(Product.featured.is_(True)).order_by(Product.sku)
    return [p.to_dict() for p in session.scalars(stmt)]
