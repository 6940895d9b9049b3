// Operations made from the schema: what clicking an operation of a table (or a handler, or a
// function) adds to the batch. Placeholder values follow each column's type, written as batchd
// expects them (exact types as strings: bigint, numeric, timestamps, uuid).

const NOW = "2026-01-01T00:00:00Z";

/** A placeholder value of PostgreSQL type `type`. */
export function placeholder(type) {
  const t = type.toLowerCase();
  if (t.endsWith("[]")) return [];
  if (t === "bigint" || t === "int8" || t === "bigserial") return "1";
  if (/^(integer|int4?|smallint|int2|serial)$/.test(t)) return 1;
  if (t.startsWith("numeric") || t.startsWith("decimal") || t === "money") return "0.00";
  if (t === "real" || t.startsWith("double")) return 0.5;
  if (t === "boolean" || t === "bool") return false;
  if (t.startsWith("timestamp")) return NOW;
  if (t === "date") return NOW.slice(0, 10);
  if (t.startsWith("time")) return "12:00:00";
  if (t === "uuid") return "00000000-0000-0000-0000-000000000000";
  if (t === "json" || t === "jsonb") return {};
  if (t === "bytea") return "";
  return "";
}

function shortName(qualified) {
  return qualified.startsWith("public.") ? qualified.slice(7) : qualified;
}

function keyOf(table) {
  const key = {};
  for (const name of table.primaryKey || []) {
    const column = table.columns.find((c) => c.name === name);
    key[name] = placeholder(column ? column.type : "text");
  }
  return key;
}

/** The body of operation `kind` ("insert", "get", ...) on `table` (a GetSchema TableInfo). */
export function tableOperation(table, kind) {
  const name = shortName(table.name);
  const keys = new Set(table.primaryKey || []);
  const settable = table.columns.filter((c) => !keys.has(c.name) && c.name !== table.versionColumn
    && c.name !== table.softDeleteColumn);
  if (kind === "insert") {
    const row = {};
    for (const c of table.columns) if (!c.hasDefault) row[c.name] = placeholder(c.type);
    return { insert: { table: name, rows: [row] } };
  }
  if (kind === "get") return { get: { table: name, key: keyOf(table) } };
  if (kind === "query") return { query: { table: name, filters: [], limit: 10 } };
  if (kind === "update") {
    const set = {};
    for (const c of settable.slice(0, 1)) set[c.name] = placeholder(c.type);
    return { update: { table: name, key: keyOf(table), set, returning: [...keys] } };
  }
  if (kind === "delete") return { delete: { table: name, key: keyOf(table) } };
  return null;
}

export function handlerOperation(handler) {
  return { call: { handler, args: {} } };
}

export function functionOperation(fn) {
  const args = {};
  for (const a of fn.arguments || []) if (!a.hasDefault) args[a.name] = placeholder(a.type);
  return { call: { function: shortName(fn.name), args } };
}

/** A fresh operation id for `body` among `taken` ids: "insert_orders", "insert_orders_2", ... */
export function freshId(body, taken) {
  const kind = Object.keys(body)[0];
  const inner = body[kind];
  const base = `${kind}_${(inner.table || inner.handler || inner.function || "op")}`
    .replace(/[^A-Za-z0-9_-]/g, "_");
  let id = base;
  for (let n = 2; taken.has(id); n++) id = `${base}_${n}`;
  return id;
}
