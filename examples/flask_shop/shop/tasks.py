"""Background work: receipts and supplier restocking."""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

from sqlalchemy.orm import Session

from .db import SessionLocal
from .models import Order, Product, utcnow

log = logging.getLogger(__name__)

SUPPLIER_LATENCY = 0.05  # seconds per supplier API call


def send_receipt(session: Session, order_id: int) -> None:
    """Runs in a worker thread; `session` is whatever the caller handed over."""
    order = session.get(Order, order_id)
    log.info("emailing receipt for order %s to %s", order.id, order.customer_email)
    order.receipt_sent_at = utcnow()
    session.flush()


def _restock_one(product_id: int, quantity: int) -> int:
    with SessionLocal.begin() as session:
        product = session.get(Product, product_id)
        time.sleep(SUPPLIER_LATENCY)  # confirm the delivery with the supplier
        product.stock += quantity
        return product.stock


def restock_all(quantities: Dict[int, int], workers: int = 20) -> Dict[int, int]:
    # misuse: more workers than the pool has connections (pool_size + max_overflow
    # = 15) and each holds its connection through the supplier call, so checkouts
    # queue up behind each other (and time out under real load).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pid: pool.submit(_restock_one, pid, qty) for pid, qty in quantities.items()}
        return {pid: f.result() for pid, f in futures.items()}
