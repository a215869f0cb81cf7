import atexit
import os
import shutil
import tempfile

# Point the app at a throwaway SQLite file before `shop` creates its engine.
_DB_DIR = tempfile.mkdtemp(prefix="flask_shop-")
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
os.environ["SHOP_DATABASE_URL"] = "sqlite:///" + os.path.join(_DB_DIR, "shop.db")

import pytest  # noqa: E402

from shop import create_app, db  # noqa: E402
from shop.models import Base  # noqa: E402
from shop.services import seed_catalog  # noqa: E402


@pytest.fixture
def empty_app():
    app = create_app(database_url=os.environ["SHOP_DATABASE_URL"], TESTING=True)
    with db.engine.begin() as conn:  # fresh data for every test
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return app


@pytest.fixture
def app(empty_app):
    with db.SessionLocal.begin() as session:
        seed_catalog(session)
    return empty_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def product_ids(client):
    return {p["sku"]: p["id"] for p in client.get("/products").get_json()}


@pytest.fixture
def order_id(client, product_ids):
    resp = client.post("/orders", json={
        "email": "ada@example.com",
        "items": [{"product_id": product_ids["MUG-01"], "quantity": 2}],
    })
    assert resp.status_code == 201
    return resp.get_json()["id"]
