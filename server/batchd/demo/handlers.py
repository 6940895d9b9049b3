"""Custom handlers of the demo schema: an example of the ``@handler`` extension point."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PositiveInt

from batchd.errors import FailedPrecondition
from batchd.kinds.call import HandlerContext, handler


class Reserve(BaseModel):
    """The arguments of reserve_stock (an unknown argument is refused, not ignored)."""

    model_config = ConfigDict(extra="forbid")

    product_id: int
    quantity: PositiveInt


@handler("reserve_stock")
async def reserve_stock(ctx: HandlerContext, args: Reserve) -> dict[str, Any]:
    """Take ``quantity`` units of product ``product_id`` out of stock, or fail the operation
    with FAILED_PRECONDITION when there are not enough. Returns the product's remaining stock
    and its price (for the order item)."""
    product_id, quantity = args.product_id, args.quantity
    row = await ctx.connection.fetchrow(
        "UPDATE products SET stock = stock - $2 WHERE id = $1::bigint AND stock >= $2 "
        "RETURNING id, stock, price", product_id, quantity)
    if row is None:
        raise FailedPrecondition(f"product {product_id} does not exist or has fewer than "
                                 f"{quantity} units in stock", reason="OUT_OF_STOCK")
    return {"product_id": row["id"], "stock": row["stock"], "price": row["price"]}
