"""JSON endpoints."""
import asyncio
import threading

from flask import Blueprint, Response, abort, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import NoResultFound

from . import async_api, audit, catalog, db, reporting, services, tasks
from .db import SessionLocal, db_session
from .models import Order, Product

bp = Blueprint("shop", __name__)


@bp.get("/health")
def health():
    return jsonify(ok=db.ping())


@bp.get("/products")
def list_products():
    products = db_session.scalars(select(Product).order_by(Product.sku))
    return jsonify([p.to_dict() for p in products])


@bp.get("/products/featured")
def featured():
    return jsonify(catalog.featured_products())


@bp.get("/products/<int:product_id>")
def product_detail(product_id: int):
    with SessionLocal() as session:
        product = session.get(Product, product_id)
        if product is None:
            abort(404)
        body = product.to_dict()
    services.record_product_view(product_id)
    return jsonify(body)


@bp.post("/products")
def create_product():
    return jsonify(services.create_product(request.get_json())), 201


@bp.post("/products/import")
def import_products():
    return jsonify(services.import_products(request.get_json()))


@bp.get("/stock")
def stock():
    ids = [int(i) for i in request.args.get("ids", "").split(",") if i]
    return jsonify(asyncio.run(async_api.stock_levels(ids)))


@bp.post("/orders")
def create_order():
    payload = request.get_json()
    with SessionLocal.begin() as session:
        order = services.place_order(session, payload["email"], payload["items"])
        body = order.to_dict()
    audit.record("order.created", body["id"])
    return jsonify(body), 201


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int):
    # misuse: no `with`/finally; the early return for an unknown order skips
    # close(), leaking the session and its checked-out connection.
    session = SessionLocal()
    order = session.get(Order, order_id)
    if order is None:
        return jsonify(error="order not found"), 404
    body = order.to_dict()
    session.close()
    return jsonify(body)


@bp.post("/orders/<int:order_id>/confirm")
def confirm_order(order_id: int):
    with SessionLocal() as session:
        order = session.get(Order, order_id)
        if order is None:
            abort(404)
        order.status = "confirmed"
        # misuse: the request's session is handed to a worker thread, which flushes
        # on the connection this thread's transaction began (Sessions are not
        # thread-safe).
        worker = threading.Thread(target=tasks.send_receipt, args=(session, order_id))
        worker.start()
        worker.join(timeout=5)
        session.commit()
        return jsonify(order.to_dict())


@bp.post("/orders/<int:order_id>/cancel")
def cancel_order(order_id: int):
    try:
        return jsonify(services.cancel_order(order_id))
    except NoResultFound:
        abort(404)


@bp.get("/prices")
def prices():
    currency = request.args.get("currency", "USD")
    latency = current_app.config["FX_API_LATENCY"]
    return jsonify(services.price_list(currency, lambda c: services.fetch_fx_rate(c, latency)))


@bp.get("/reports/sales")
def sales_report():
    summary = reporting.sales_summary(current_app.config["DATABASE_URL"])
    if current_app.config["WAREHOUSE_ENABLED"]:
        reporting.push_to_warehouse(summary)
    return jsonify(summary)


@bp.get("/reports/orders.csv")
def orders_csv():
    return Response(reporting.export_orders_csv(current_app.config["DATABASE_URL"]),
                    mimetype="text/csv")


@bp.post("/admin/restock")
def restock():
    quantities = {int(k): v for k, v in request.get_json().items()}
    return jsonify(tasks.restock_all(quantities))
