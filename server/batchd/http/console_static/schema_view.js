// The schema as the caller's token sees it (GetSchema is already limited to the token's scopes
// and database role): tables with their columns, types and keys, the operations the token may
// use on each, handlers and SQL functions. Each operation is a button adding its template.

import { el, fill } from "./dom.js";
import { functionOperation, handlerOperation, tableOperation } from "./templates.js";

function columnRow(table, column) {
  const marks = [];
  if ((table.primaryKey || []).includes(column.name)) marks.push(el("span", { className: "mark key" }, "key"));
  if (column.name === table.versionColumn) marks.push(el("span", { className: "mark" }, "version"));
  if (column.name === table.softDeleteColumn) marks.push(el("span", { className: "mark" }, "soft delete"));
  if (!column.nullable) marks.push(el("span", { className: "mark" }, "not null"));
  if (column.hasDefault) marks.push(el("span", { className: "mark" }, "default"));
  return el("tr", {},
    el("td", { className: "column-name" }, column.name),
    el("td", { className: "column-type" }, column.type),
    el("td", {}, marks));
}

function tableBlock(table, addOperation) {
  const ops = (table.operations || []).map((kind) => el("button", {
    type: "button", className: `op op-${kind}`, title: `add a ${kind} on ${table.name} to the batch`,
    dataset: { table: table.name, kind },
    onclick: () => addOperation(tableOperation(table, kind)),
  }, kind));
  return el("details", { className: "table", dataset: { table: table.name } },
    el("summary", {}, el("span", { className: "table-name" }, table.name), " ",
      el("span", { className: "may" }, ops)),
    el("table", { className: "columns" },
      el("thead", {}, el("tr", {}, el("th", {}, "column"), el("th", {}, "type"), el("th", {}, ""))),
      el("tbody", {}, table.columns.map((c) => columnRow(table, c)))));
}

/** Shows `schema` (GetSchema's JSON) in `root`; `addOperation(body)` adds a template. */
export function renderSchema(root, schema, addOperation) {
  const tables = schema.tables || [];
  const handlers = schema.handlers || [];
  const functions = schema.functions || [];
  const list = el("div", { id: "tables" }, tables.map((t) => tableBlock(t, addOperation)));
  const filter = el("input", { type: "search", id: "schema-filter", placeholder: "filter tables and columns",
    "aria-label": "filter tables", oninput: () => {
      const words = filter.value.trim().toLowerCase();
      for (const block of list.children) {
        block.hidden = words !== "" && !block.textContent.toLowerCase().includes(words);
      }
    } });
  fill(root,
    el("h2", {}, "Schema"),
    el("p", { className: "hint" },
      "What this token may use: the buttons are the operations its scopes and database role allow (click one to add it to the batch)."),
    tables.length === 0 ? el("p", { className: "empty" }, "No table is open to this token.")
      : filter,
    list,
    el("h3", {}, "Handlers"),
    handlers.length === 0 ? el("p", { className: "empty" }, "none") :
      el("ul", { id: "handlers" }, handlers.map((h) => el("li", {},
        el("button", { type: "button", className: "op op-call", dataset: { handler: h },
          onclick: () => addOperation(handlerOperation(h)) }, h)))),
    el("h3", {}, "SQL functions"),
    functions.length === 0 ? el("p", { className: "empty" }, "none") :
      el("ul", { id: "functions" }, functions.map((f) => el("li", {},
        el("button", { type: "button", className: "op op-call", dataset: { function: f.name },
          onclick: () => addOperation(functionOperation(f)) }, f.name),
        " (", (f.arguments || []).map((a) => `${a.name} ${a.type}`).join(", "), ") → ",
        f.returns || ""))));
}
