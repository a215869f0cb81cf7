def test_seed_command_then_list_products(empty_app):
    result = empty_app.test_cli_runner().invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    skus = [p["sku"] for p in empty_app.test_client().get("/products").get_json()]
    assert skus == ["CAP-01", "MUG-01", "TEE-01"]


def test_product_detail_and_404(client, product_ids):
    resp = client.get("/products/%d" % product_ids["TEE-01"])
    assert resp.status_code == 200
    assert resp.get_json()["name"] == "Logo tee"
    assert client.get("/products/999999").status_code == 404


def test_featured_products(client):
    skus = [p["sku"] for p in client.get("/products/featured").get_json()]
    assert skus == ["CAP-01", "MUG-01"]


def test_create_product_and_duplicate_sku(client):
    new = {"sku": "BAG-01", "name": "Tote bag", "price_cents": 1500, "stock": 5}
    resp = client.post("/products", json=new)
    assert resp.status_code == 201
    assert resp.get_json()["sku"] == "BAG-01"
    dup = client.post("/products", json=dict(new, name="Other bag"))
    assert dup.status_code == 409
    assert "BAG-01" in dup.get_json()["error"]


def test_import_skips_duplicates(client):
    rows = [
        {"sku": "PIN-01", "name": "Pin", "price_cents": 300},
        {"sku": "MUG-01", "name": "Duplicate mug", "price_cents": 1},
        {"sku": "PEN-01", "name": "Pen", "price_cents": 200},
    ]
    assert client.post("/products/import", json=rows).get_json() == {"imported": 2, "skipped": 1}
    skus = {p["sku"] for p in client.get("/products").get_json()}
    assert {"PIN-01", "PEN-01"} <= skus


def test_stock_levels_async(client, product_ids):
    ids = "%d,%d,999999" % (product_ids["MUG-01"], product_ids["CAP-01"])
    levels = client.get("/stock?ids=" + ids).get_json()
    assert levels == {str(product_ids["MUG-01"]): 40, str(product_ids["CAP-01"]): 10, "999999": None}


def test_restock_all(client):
    extra = [{"sku": "SKU-%02d" % i, "name": "Item %d" % i, "price_cents": 100, "stock": i}
             for i in range(17)]
    client.post("/products/import", json=extra)
    before = {p["id"]: p["stock"] for p in client.get("/products").get_json()}
    assert len(before) == 20
    resp = client.post("/admin/restock", json={str(pid): 5 for pid in before})
    after = {p["id"]: p["stock"] for p in client.get("/products").get_json()}
    assert after == {pid: stock + 5 for pid, stock in before.items()}
    assert {int(k): v for k, v in resp.get_json().items()} == after


def test_price_list_with_slow_fx_provider(app, client):
    app.config["FX_API_LATENCY"] = 2.2  # the provider is having a bad day
    prices = client.get("/prices?currency=EUR").get_json()
    assert {"sku": "MUG-01", "price": 11.04} in prices


def test_health(client):
    assert client.get("/health").get_json() == {"ok": True}
