"""What a role may do with a table, from its privileges (batchd.grants.table_use), on the
hand-made shop catalog: no database."""

from __future__ import annotations

from batchd.grants import table_use
from tests.unit.shop import CATALOG

CUSTOMERS = CATALOG.tables["public.customers"]  # id PK; soft deletes (deleted_at)
ORDER_ITEMS = CATALOG.tables["public.order_items"]  # (order_id, line) PK
EVENTS = CATALOG.tables["public.events"]  # no primary key: insert only


def test_no_column_privilege_is_no_use_at_all():
    assert table_use(CUSTOMERS, deletes=True, selects=[], inserts=[], updates=[]) is None


def test_rows_are_addressed_by_the_key_so_reading_needs_select_on_all_of_it():
    use = table_use(ORDER_ITEMS, deletes=True, selects=["order_id", "qty"], inserts=[],
                    updates=["qty"])
    assert use is not None
    assert use.columns == {"order_id", "qty"} and use.operations == frozenset()
    use = table_use(ORDER_ITEMS, deletes=True, selects=["order_id", "line"], inserts=[],
                    updates=["qty"])
    assert use is not None and use.operations == {"get", "query", "update", "delete"}


def test_a_soft_delete_needs_update_on_the_soft_delete_column_not_delete():
    use = table_use(CUSTOMERS, deletes=True, selects=["id"], inserts=[], updates=["name"])
    assert use is not None and "delete" not in use.operations
    use = table_use(CUSTOMERS, deletes=False, selects=["id"], inserts=[],
                    updates=["deleted_at"])
    assert use is not None and "delete" in use.operations


def test_insert_alone_needs_no_select_and_a_keyless_table_takes_only_inserts():
    use = table_use(CUSTOMERS, deletes=False, selects=[], inserts=["name", "email"],
                    updates=[])
    assert use is not None and use.operations == {"insert"}
    assert use.columns == {"name", "email"}
    use = table_use(EVENTS, deletes=True, selects=list(EVENTS.columns),
                    inserts=list(EVENTS.columns), updates=list(EVENTS.columns))
    assert use is not None and use.operations == {"insert"}
