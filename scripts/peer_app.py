#!/usr/bin/env python3
"""The benchmarks' peer: a bulk endpoint written the usual way, FastAPI + SQLAlchemy 2 async.

    .venv/bin/python scripts/peer_app.py --dsn DSN [--host 127.0.0.1] [--port 0] [--pool-size 16]
    PEER_DSN=DSN .venv/bin/uvicorn --factory peer_app:create_app --app-dir scripts

Not part of batchd (its dependencies are the `bench` extra). It is what a user would write
instead of using batchd, following the common FastAPI pattern: Pydantic models validate the
JSON body, an async session per request (a dependency), the asyncpg driver.

    POST /bulk/orm   a JSON list of at most 1,000 bench_rows rows: session.add_all, commit
    POST /bulk/core  the same body, the best form: session.execute(insert(Model), rows), commit
    POST /orders     a customer, an order referencing it, 6 items referencing the order, an
                     update of the order's status (its version incremented), a read of the order:
                     one transaction, the same work as the BatchExecute batch of bench_execute.py
    GET  /healthz    an empty request (the HTTP baseline)

The tables are created by the benchmarks; the models mirror them. bench_rows has no primary key
(every ingest contender writes the same table), and the ORM needs one to map a class: `name`
(unique in the benchmark's rows) is declared the mapper's key, with no database constraint.

Run by `python scripts/peer_app.py`, it listens on --port (0: any free port) and prints
`peer listening on HOST:PORT (loop=..., http=...)` once it accepts connections. uvicorn: one
worker process, uvloop and httptools when installed (`auto`), no access log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field
from sqlalchemy import DateTime, ForeignKey, Numeric, insert, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MAX_BULK_ROWS = 1000


# --- models (mirror the tables the benchmarks create) ------------------------------------------

class Base(DeclarativeBase):
    pass


class BenchRow(Base):
    __tablename__ = "bench_rows"

    name: Mapped[str] = mapped_column(primary_key=True)  # mapper key only, see the docstring
    category: Mapped[str]
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    qty: Mapped[int]
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Customer(Base):
    __tablename__ = "bench_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str]


class Order(Base):
    __tablename__ = "bench_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("bench_customers.id"))
    status: Mapped[str] = mapped_column(default="new")
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    version: Mapped[int] = mapped_column(default=1)

    # SQLAlchemy's optimistic locking: every UPDATE increments version (as batchd does).
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Item(Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("bench_orders.id"))
    sku: Mapped[str]
    qty: Mapped[int]
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))


# --- request and response bodies ---------------------------------------------------------------

class BenchRowIn(BaseModel):
    name: str
    category: str
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    qty: int
    at: dt.datetime


BulkRows = Annotated[list[BenchRowIn], Field(min_length=1, max_length=MAX_BULK_ROWS)]


class BulkResult(BaseModel):
    inserted: int


class CustomerIn(BaseModel):
    name: str
    email: str


class ItemIn(BaseModel):
    sku: str
    qty: int
    price: Decimal = Field(max_digits=12, decimal_places=2)


class OrderIn(BaseModel):
    customer: CustomerIn
    total: Decimal = Field(max_digits=12, decimal_places=2)
    items: list[ItemIn] = Field(min_length=1, max_length=100)
    status: str  # the status the order is updated to after its items are added


class OrderOut(BaseModel):
    model_config = {"from_attributes": True}

    id: int
    customer_id: int
    status: str
    total: Decimal
    version: int


# --- the application ---------------------------------------------------------------------------

def async_url(dsn: str) -> str:
    """postgresql://... (libpq style, as batchd takes it) -> postgresql+asyncpg://..."""
    return make_url(dsn).set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request (the FastAPI dependency of every endpoint)."""
    async with request.app.state.session_factory() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def create_app(dsn: str | None = None, pool_size: int = 16) -> FastAPI:
    """The FastAPI application (also a uvicorn factory: the DSN then comes from PEER_DSN)."""
    dsn = dsn or os.environ["PEER_DSN"]
    # pool_size: as many connections as batchd's default pool (pool_max_size = 16).
    engine = create_async_engine(async_url(dsn), pool_size=pool_size, max_overflow=0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.session_factory = async_sessionmaker(engine, expire_on_commit=False)
        yield
        await engine.dispose()

    app = FastAPI(title="batchd benchmark peer", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/bulk/orm")
    async def bulk_orm(rows: BulkRows, session: Session) -> BulkResult:
        session.add_all([BenchRow(**row.model_dump()) for row in rows])
        await session.commit()
        return BulkResult(inserted=len(rows))

    @app.post("/bulk/core")
    async def bulk_core(rows: BulkRows, session: Session) -> BulkResult:
        await session.execute(insert(BenchRow), [row.model_dump() for row in rows])
        await session.commit()
        return BulkResult(inserted=len(rows))

    @app.post("/orders")
    async def create_order(body: OrderIn, session: Session) -> OrderOut:
        async with session.begin():
            customer = Customer(**body.customer.model_dump())
            session.add(customer)
            await session.flush()  # INSERT ... RETURNING id
            order = Order(customer_id=customer.id, total=body.total)
            session.add(order)
            await session.flush()
            session.add_all([Item(order_id=order.id, **item.model_dump())
                             for item in body.items])
            await session.flush()  # the 6 items: one multi-row INSERT ... RETURNING id
            order.status = body.status
            await session.flush()  # UPDATE ... SET status, version = v + 1 WHERE id, version = v
            await session.refresh(order)  # SELECT the order by its key
        return OrderOut.model_validate(order)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PEER_DSN"),
                        help="PostgreSQL DSN (default: $PEER_DSN)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--pool-size", type=int, default=16)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn or PEER_DSN is required")

    # Bind first so that --port 0 can print the real port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(create_app(args.dsn, args.pool_size), loop="auto", http="auto",
                            access_log=False, log_level="warning", backlog=2048)
    server = uvicorn.Server(config)
    startup = server.startup

    async def announce(sockets: list[socket.socket] | None = None) -> None:
        await startup(sockets)
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(f"peer listening on {host}:{port} (loop={loop}, "
              f"http={config.http_protocol_class.__name__})", flush=True)

    server.startup = announce  # type: ignore[method-assign]
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
