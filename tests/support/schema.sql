-- Test tables beside the demo schema (customers, products, orders, order_items).
CREATE TABLE all_types (
    id         bigint PRIMARY KEY,
    i2         smallint,
    i4         integer,
    i8         bigint,
    num        numeric,
    money      numeric(12, 2),
    f8         double precision,
    flag       boolean,
    label      text,
    code       varchar(10),
    uid        uuid,
    day        date,
    at         timestamptz,
    local_at   timestamp,
    doc        json,
    docb       jsonb,
    blob       bytea,
    ids        bigint[],
    tags       text[],
    grid       integer[][],
    span       interval
);
CREATE TABLE events (
    id    bigint PRIMARY KEY,
    kind  text NOT NULL,
    score integer
);
CREATE TABLE no_key (x integer);
CREATE TABLE "Odd ""Name""" (id integer PRIMARY KEY, "select" text);
CREATE TABLE readonly_things (id integer PRIMARY KEY, name text);
CREATE SCHEMA hidden;
CREATE TABLE hidden.secrets (id integer PRIMARY KEY, secret text);
INSERT INTO hidden.secrets VALUES (1, 'do not leak');
-- Column types the Arrow encoding refuses (tests/integration/test_stream_arrow.py).
CREATE TABLE arrow_refused (
    id    integer PRIMARY KEY,
    tstz  timestamptz[],
    uids  uuid[],
    names varchar(20)[],
    tt    timetz,
    r     int4range
);
CREATE TYPE mood_kind AS ENUM ('happy', 'sad');
-- More column types the Arrow encoding takes (tests/integration/test_stream_arrow.py).
CREATE TABLE arrow_extra (
    id       integer PRIMARY KEY,
    docs     jsonb[],
    moments  timestamp[],
    at_time  time,
    ratio    real,
    amounts  numeric(5, 2)[],
    flags    boolean[],
    mood     mood_kind
);
-- SQL functions (tests/integration/test_functions.py). The test server exposes public.fn_* only.
-- A scalar function with a default.
CREATE FUNCTION fn_add(a integer, b integer DEFAULT 10) RETURNS integer
    LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
-- A set-returning function (RETURNS TABLE), with a default.
CREATE FUNCTION fn_series(n integer, prefix text DEFAULT 'row')
    RETURNS TABLE (i integer, label text)
    LANGUAGE sql AS $$ SELECT g, prefix || '-' || g FROM generate_series(1, n) AS g $$;
-- Overloads with the same argument names: no call can tell them apart.
CREATE FUNCTION fn_points(a integer, b integer) RETURNS integer LANGUAGE sql AS 'SELECT a + b';
CREATE FUNCTION fn_points(a numeric, b numeric) RETURNS numeric LANGUAGE sql AS 'SELECT a + b';
-- Overloads told apart by their argument names.
CREATE FUNCTION fn_area(side numeric) RETURNS numeric LANGUAGE sql AS 'SELECT side * side';
CREATE FUNCTION fn_area(width numeric, height numeric) RETURNS numeric
    LANGUAGE sql AS 'SELECT width * height';
-- Exact values in and out: numeric, bigint beyond 2^53, jsonb.
CREATE FUNCTION fn_exact(amount numeric, big bigint, doc jsonb)
    RETURNS TABLE (doubled numeric, next_big bigint, doc_back jsonb, amount_type text)
    LANGUAGE sql AS $$ SELECT amount * 2, big + 1, doc, pg_typeof(amount)::text $$;
-- A void function that writes.
CREATE FUNCTION fn_log_event(id bigint, kind text, score integer DEFAULT NULL) RETURNS void
    LANGUAGE sql AS 'INSERT INTO events (id, kind, score) VALUES (id, kind, score)';
-- A function returning a table's rows (a composite type): its columns are the table's.
CREATE FUNCTION fn_products_under(max_price numeric) RETURNS SETOF products
    LANGUAGE sql STABLE AS 'SELECT * FROM products WHERE price < max_price ORDER BY id';
-- Not matched by the pattern.
CREATE FUNCTION secret_double(x integer) RETURNS integer LANGUAGE sql AS 'SELECT 2 * x';
-- Matched, but not callable from a request: skipped.
CREATE FUNCTION fn_variadic(VARIADIC xs integer[]) RETURNS integer
    LANGUAGE sql AS 'SELECT cardinality(xs)';
CREATE FUNCTION fn_polymorphic(x anyelement) RETURNS text LANGUAGE sql AS 'SELECT x::text';
CREATE FUNCTION fn_records() RETURNS SETOF record LANGUAGE sql AS 'SELECT 1, 2';
-- A table with a trigger of its own, which reads another table (tests/integration/test_chains.py): an
-- insert into it must see what the batch's earlier operations wrote.
CREATE TABLE audited (id bigint PRIMARY KEY, customers_seen bigint);
CREATE FUNCTION count_customers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.customers_seen := (SELECT count(*) FROM customers);
    RETURN NEW;
END $$;
CREATE TRIGGER audited_counts BEFORE INSERT ON audited
    FOR EACH ROW EXECUTE FUNCTION count_customers();
