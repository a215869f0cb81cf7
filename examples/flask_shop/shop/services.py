"""Business logic. Most functions own their session; some take the caller's."""
import logging
import time
from typing import Callable, Dict, Iterable, List

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import SessionLocal
from .models import Order, OrderLine, Product

log = logging.getLogger(__name__)

FX_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}


class ShopError(Exception):
    status = 400


class DuplicateSku(ShopError):
    status = 409


class OutOfStock(ShopError):
    status = 409


def seed_catalog(session: Session) -> None:
    session.add_all([
        Product(sku="MUG-01", name="Enamel mug", price_cents=1200, stock=40, featured=True),
        Product(sku="TEE-01", name="Logo tee", price_cents=2500, stock=25),
        Product(sku="CAP-01", name="Cap", price_cents=1800, stock=10, featured=True),
    ])


def create_product(data: dict) -> dict:
    try:
        with SessionLocal() as session:
            product = Product(**data)
            session.add(product)
            session.commit()
            return product.to_dict()
    except IntegrityError:
        # misuse: the `with` has already closed the session; this lookup after the
        # block autobegins a new transaction and checks out a connection nothing closes.
        existing = session.scalar(select(Product.id).where(Product.sku == data["sku"]))
        raise DuplicateSku("sku %s already exists (product %s)" % (data["sku"], existing))


def import_products(rows: Iterable[dict]) -> Dict[str, int]:
    imported = skipped = 0
    with SessionLocal() as session:
        for row in rows:
            try:
                session.execute(insert(Product).values(**row))
                imported += 1
            except IntegrityError:
                # misuse: no rollback (not even a savepoint) before reusing the session.
                # Passes on SQLite; on PostgreSQL the transaction is aborted and every
                # later row fails with "current transaction is aborted".
                log.warning("skipping duplicate sku %s", row.get("sku"))
                skipped += 1
                continue
        session.commit()
    return {"imported": imported, "skipped": skipped}


def record_product_view(product_id: int) -> None:
    # misuse: `with Session()` does not commit; the counter update is rolled back
    # when the block closes the session, so `views` never changes.
    with SessionLocal() as session:
        session.execute(
            update(Product).where(Product.id == product_id).values(views=Product.views + 1)
        )


def place_order(session: Session, email: str, items: List[dict]) -> Order:
    """Caller owns the transaction (it uses SessionLocal.begin())."""
    order = Order(customer_email=email)
    for item in items:
        product = session.get(Product, item["product_id"], with_for_update=True)
        if product is None or product.stock < item["quantity"]:
            raise OutOfStock("not enough stock for product %s" % item["product_id"])
        product.stock -= item["quantity"]
        order.lines.append(OrderLine(product_id=product.id, quantity=item["quantity"],
                                     unit_price_cents=product.price_cents))
    session.add(order)
    session.flush()
    return order


def cancel_order(order_id: int) -> dict:
    # misuse: close() is not in a finally: when scalar_one() raises NoResultFound
    # (unknown id) the session and its pooled connection are leaked.
    session = SessionLocal()
    order = session.execute(select(Order).where(Order.id == order_id)).scalar_one()
    for line in order.lines:
        line.product.stock += line.quantity
    order.status = "cancelled"
    session.commit()
    result = order.to_dict()
    session.close()
    return result


def price_list(currency: str, fetch_rate: Callable[[str], float]) -> List[dict]:
    with SessionLocal.begin() as session:
        products = session.scalars(select(Product).order_by(Product.sku)).all()
        # misuse: a slow HTTP call made while the transaction (and its connection)
        # is still open; the transaction lasts as long as the upstream API.
        rate = fetch_rate(currency)
        return [{"sku": p.sku, "price": round(p.price_cents * rate / 100, 2)} for p in products]


def fetch_fx_rate(currency: str, latency: float = 0.0) -> float:
    time.sleep(latency)  # stands in for the FX provider's HTTP API
    return FX_RATES[currency]
