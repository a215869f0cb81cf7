def _stock(client, sku):
    return {p["sku"]: p["stock"] for p in client.get("/products").get_json()}[sku]


def test_place_order_takes_stock(client, product_ids, order_id):
    assert _stock(client, "MUG-01") == 38
    body = client.get("/orders/%d" % order_id).get_json()
    assert body["total_cents"] == 2400
    assert body["status"] == "pending"


def test_out_of_stock_order_is_rolled_back(client, product_ids):
    resp = client.post("/orders", json={
        "email": "bob@example.com",
        "items": [{"product_id": product_ids["MUG-01"], "quantity": 1},
                  {"product_id": product_ids["CAP-01"], "quantity": 99}],
    })
    assert resp.status_code == 409
    assert _stock(client, "MUG-01") == 40


def test_unknown_order_is_404(client):
    assert client.get("/orders/424242").status_code == 404


def test_confirm_order_sends_receipt(client, order_id):
    body = client.post("/orders/%d/confirm" % order_id).get_json()
    assert body["status"] == "confirmed"
    assert body["receipt_sent"] is True


def test_cancel_order_restores_stock(client, order_id):
    assert client.post("/orders/%d/cancel" % order_id).get_json()["status"] == "cancelled"
    assert _stock(client, "MUG-01") == 40
    assert client.post("/orders/424242/cancel").status_code == 404


def test_reports(client, product_ids, order_id):
    assert client.get("/reports/sales").get_json() == [
        {"sku": "MUG-01", "units": 2, "revenue_cents": 2400}
    ]
    csv_text = client.get("/reports/orders.csv").get_data(as_text=True)
    assert csv_text.splitlines()[1] == "%d,ada@example.com,pending" % order_id
