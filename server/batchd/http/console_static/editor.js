// The batch editor: a JSON text area holding a BatchExecuteRequest (its operations at least),
// templates added from the schema, and a completion list (Ctrl+Space) of table names, column
// names and `$ref`s to earlier operations, drawn from the schema and the batch itself.

import { el, fill } from "./dom.js";
import { freshId } from "./templates.js";

export const EXAMPLE = {
  operations: [
    { id: "customer", insert: { table: "customers", rows: [{ name: "Ada", email: "ada@example.com" }] } },
    { id: "order", insert: { table: "orders",
      rows: [{ customer_id: { $ref: "customer.id" }, total: "69.89" }], returning: ["id", "version"] } },
    { id: "orders", query: { table: "orders", filters: [{ column: "customer_id", op: "OPERATOR_EQ",
      value: { $ref: "customer.id" } }] } },
  ],
};

export class Editor {
  constructor(textarea, suggestions) {
    this.textarea = textarea;
    this.suggestions = suggestions;
    this.schema = { tables: [], handlers: [], functions: [] };
    textarea.addEventListener("keydown", (e) => {
      if (e.key === " " && e.ctrlKey) { e.preventDefault(); this.suggest(); }
      else if (e.key === "Escape") fill(this.suggestions);
    });
  }

  get text() { return this.textarea.value; }
  set text(value) { this.textarea.value = value; }

  setBatch(batch) { this.text = JSON.stringify(batch, null, 2); }

  /** The request in the editor: {request} or {error} (a message saying where the JSON breaks). */
  parse() {
    let request;
    try { request = JSON.parse(this.text || "{}"); } catch (err) { return { error: `the batch is not JSON: ${err.message}` }; }
    if (Array.isArray(request)) request = { operations: request };
    if (typeof request !== "object" || request === null) return { error: "the batch must be a JSON object" };
    return { request };
  }

  /** Appends `body` (an operation without id) with a fresh id. A batch that is not JSON is
   * left as it is (the user's text is never thrown away): the error is shown instead. */
  addOperation(body) {
    const { request: batch, error } = this.parse();
    if (error) {
      fill(this.suggestions, el("li", { className: "error" }, `${error}: fix it to add templates`));
      return;
    }
    batch.operations = batch.operations || [];
    const taken = new Set(batch.operations.map((op) => op.id));
    batch.operations.push({ id: freshId(body, taken), ...body });
    this.setBatch(batch);
  }

  /** Selects operation `id` in the text (its `"id": "…"`), scrolled into view. */
  select(id) {
    const quoted = JSON.stringify(id).replace(/[.*+?^$()|[\]{}\\]/g, "\\$&");
    const pattern = new RegExp(`"id"\\s*:\\s*${quoted}`);
    const found = pattern.exec(this.text);
    if (!found) return false;
    this.textarea.focus();
    this.textarea.setSelectionRange(found.index, found.index + found[0].length);
    this.textarea.scrollIntoView({ block: "center" });
    return true;
  }

  /** What may be typed at the cursor: tables, their columns, and references to earlier ops. */
  candidates() {
    const out = [];
    for (const t of this.schema.tables || []) {
      const short = t.name.startsWith("public.") ? t.name.slice(7) : t.name;
      out.push({ text: short, note: "table" });
      for (const c of t.columns) out.push({ text: c.name, note: `${short} column, ${c.type}` });
    }
    for (const h of this.schema.handlers || []) out.push({ text: h, note: "handler" });
    for (const f of this.schema.functions || []) out.push({ text: f.name, note: "function" });
    const { request } = this.parse();
    for (const op of (request && request.operations) || []) {
      const kind = Object.keys(op).find((k) => ["insert", "get", "query", "update", "delete", "call"].includes(k));
      const table = kind && op[kind].table;
      const info = (this.schema.tables || []).find((t) => t.name === table || t.name === `public.${table}`);
      for (const c of info ? info.columns : [{ name: "id" }]) {
        out.push({ text: `{"$ref": "${op.id}.${c.name}"}`, note: `reference to ${op.id}` });
      }
    }
    const seen = new Map();
    for (const c of out) {
      if (seen.has(c.text)) seen.get(c.text).note += `; ${c.note}`;
      else seen.set(c.text, { ...c });
    }
    return [...seen.values()].sort((a, b) => a.text.localeCompare(b.text));
  }

  suggest() {
    const { value, selectionStart } = this.textarea;
    const before = value.slice(0, selectionStart);
    const word = /[A-Za-z0-9_.$]*$/.exec(before)[0];
    const matches = this.candidates().filter((c) => c.text.replace(/^\{"\$ref": "/, "").startsWith(word)
      || c.text.startsWith(word)).slice(0, 30);
    fill(this.suggestions, matches.map((m) => el("li", {},
      el("button", { type: "button", className: "suggestion", onclick: () => this.insert(word, m.text) },
        m.text), " ", el("span", { className: "note" }, m.note))));
  }

  insert(word, text) {
    const { value, selectionStart } = this.textarea;
    const start = selectionStart - word.length;
    this.textarea.value = value.slice(0, start) + text + value.slice(selectionStart);
    this.textarea.selectionStart = this.textarea.selectionEnd = start + text.length;
    this.textarea.focus();
    fill(this.suggestions);
  }
}
