"""Async stock lookup used by the (planned) websocket stock ticker."""
import asyncio
from typing import Dict, Iterable, Optional

from .db import db_session
from .models import Product


async def stock_levels(product_ids: Iterable[int]) -> Dict[int, Optional[int]]:
    async def one(product_id: int) -> Optional[int]:
        # misuse: db_session is thread-local; every task on the event loop runs in the
        # same thread, so all of them share (and interleave on) one Session.
        product = db_session.get(Product, product_id)
        await asyncio.sleep(0)
        return None if product is None else product.stock

    ids = list(product_ids)
    return dict(zip(ids, await asyncio.gather(*(one(pid) for pid in ids))))
