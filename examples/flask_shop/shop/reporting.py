"""Sales reports, the CSV export and the push to the MySQL data warehouse."""
import csv
import functools
import io
from typing import List

from sqlalchemy import Engine, create_engine, text

SALES_SQL = text(
    "SELECT p.sku, SUM(l.quantity) AS units, SUM(l.quantity * l.unit_price_cents) AS cents"
    " FROM order_lines l JOIN products p ON p.id = l.product_id"
    " JOIN orders o ON o.id = l.order_id WHERE o.status != 'cancelled'"
    " GROUP BY p.sku ORDER BY p.sku"
)


def sales_summary(database_url: str) -> List[dict]:
    # misuse: a new engine (and connection pool) for every report request, never
    # disposed: each call opens a fresh DBAPI connection and abandons the pool.
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(SALES_SQL).all()
    return [{"sku": r.sku, "units": r.units, "revenue_cents": r.cents} for r in rows]


@functools.lru_cache(maxsize=None)
def export_engine(database_url: str) -> Engine:
    # misuse: max_overflow=-1 removes the bound on connections; a burst of exports
    # can exhaust the database server's max_connections.
    return create_engine(database_url, pool_size=5, max_overflow=-1)


def export_orders_csv(database_url: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["order_id", "customer_email", "status"])
    with export_engine(database_url).connect() as conn:
        for row in conn.execute(text("SELECT id, customer_email, status FROM orders ORDER BY id")):
            writer.writerow(list(row))
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def warehouse_engine() -> Engine:
    # misuse: MySQL URL without pool_recycle: connections idle past the server's
    # wait_timeout (8 h) die and the next nightly push fails with "Lost connection".
    return create_engine("mysql+pymysql://reports@warehouse.internal:3306/shop_dw", pool_size=2)


def push_to_warehouse(summary: List[dict]) -> None:
    """Only called when WAREHOUSE_ENABLED is set; never in tests."""
    with warehouse_engine().begin() as conn:
        conn.execute(
            text("INSERT INTO daily_sales (sku, units, revenue_cents) VALUES (:sku, :units, :revenue_cents)"),
            summary,
        )
