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
-- Column types the Arrow encoding refuses (tests/test_stream_arrow.py).
CREATE TABLE arrow_refused (
    id    integer PRIMARY KEY,
    tstz  timestamptz[],
    uids  uuid[],
    names varchar(20)[],
    tt    timetz,
    r     int4range
);
CREATE TYPE mood_kind AS ENUM ('happy', 'sad');
-- More column types the Arrow encoding takes (tests/test_stream_arrow.py).
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
