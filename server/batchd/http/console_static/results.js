// A batch's results: one card per operation of the request, in request order, coloured by its
// outcome, with its rows as a table and, when it did not succeed, its status: code, message,
// ErrorInfo (reason, SQLSTATE, constraint...) and field violations. A batch refused before it
// ran (a bad request) has no results: its field violations are put on the operations their
// paths (`operations[2].insert.rows[0].price`) name.

import { el, fill, valueText } from "./dom.js";

const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

function outcomeName(outcome) {
  return (outcome || "OUTCOME_UNSPECIFIED").replace(/^OUTCOME_/, "").toLowerCase();
}

function detailOf(details, typeName) {
  return (details || []).find((d) => (d["@type"] || "").endsWith(`/${typeName}`)) || null;
}

function rowsTable(result) {
  const rows = result.rows || [];
  if (rows.length === 0) return null;
  const names = (result.columns || []).map((c) => c.name);
  for (const row of rows) for (const k of Object.keys(row)) if (!names.includes(k)) names.push(k);
  const types = Object.fromEntries((result.columns || []).map((c) => [c.name, c.type]));
  return el("table", { className: "rows" },
    el("thead", {}, el("tr", {}, names.map((n) => el("th", { title: types[n] || "" }, n,
      types[n] ? el("span", { className: "type" }, types[n]) : null)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, names.map((n) => el("td", {
      className: row[n] === null || row[n] === undefined ? "null" : "",
    }, valueText(row[n])))))));
}

function violationsList(violations) {
  if (!violations || violations.length === 0) return null;
  return el("ul", { className: "violations" }, violations.map((v) =>
    el("li", {}, el("code", {}, v.field || ""), ": ", v.description || "")));
}

function errorInfoList(info) {
  if (!info) return null;
  const entries = Object.entries(info.metadata || {}).filter(([k]) => k !== "operation_id");
  return el("dl", { className: "error-info" },
    el("dt", {}, "reason"), el("dd", {}, info.reason || ""),
    entries.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function statusBlock(status, extraViolations = []) {
  if (!status && extraViolations.length === 0) return null;
  const details = (status && status.details) || [];
  const badRequest = detailOf(details, "google.rpc.BadRequest");
  const violations = [...((badRequest && badRequest.fieldViolations) || []), ...extraViolations];
  return el("div", { className: "status" },
    status ? el("p", { className: "status-message" },
      el("span", { className: "code" }, CODES[status.code || 0] || String(status.code)), " ",
      status.message || "") : null,
    errorInfoList(detailOf(details, "google.rpc.ErrorInfo")),
    violationsList(violations));
}

// What a card's buttons do (app.js): "show in editor" selects the operation in the editor;
// "next page" runs the query again from its next_page_token, alone, and replaces the card.
let locate = () => {};
let nextPage = () => {};
export function onLocate(callback) { locate = callback; }
export function onNextPage(callback) { nextPage = callback; }

export function resultCard(operation, result, violations = []) {
  const outcome = result ? outcomeName(result.outcome) : violations.length ? "invalid" : "not-sent";
  const kind = operation ? Object.keys(operation).find((k) =>
    ["insert", "get", "query", "update", "delete", "call"].includes(k)) : "";
  const id = (result && result.id) || (operation && operation.id) || "";
  const facts = [];
  if (result && result.rowsAffected !== undefined) facts.push(`${result.rowsAffected} row(s) affected`);
  if (result && result.totalCount !== undefined) facts.push(`total ${result.totalCount}`);
  return el("section", { className: `result outcome-${outcome}`, dataset: { operation: id, outcome } },
    el("header", {},
      el("span", { className: "op-id" }, id), " ",
      el("span", { className: "kind" }, kind || ""), " ",
      el("span", { className: "outcome" }, outcome.replace(/_/g, " ")),
      facts.length ? el("span", { className: "facts" }, facts.join(" · ")) : null,
      ["failed", "invalid"].includes(outcome) && id ? el("button", { type: "button",
        className: "locate", onclick: () => locate(id) }, "show in editor") : null,
      result && result.nextPageToken && kind === "query" ? el("button", { type: "button",
        className: "next-page", title: `page_token ${result.nextPageToken}`,
        onclick: (e) => nextPage(operation, result.nextPageToken, e.target.closest(".result")) },
      "next page") : null),
    statusBlock(result && result.status, violations),
    result ? rowsTable(result) : null);
}

/** The index of the operation a field path names (`operations[2]...`), or -1. */
export function operationIndex(path) {
  const m = /^operations\[(\d+)\]/.exec(path || "");
  return m ? Number(m[1]) : -1;
}

/** Shows a successful answer (`response`: BatchExecuteResponse JSON) of `request`. */
export function renderResponse(root, request, response, { validateOnly = false } = {}) {
  const ops = request.operations || [];
  const results = response.results || [];
  const byId = new Map(results.map((r) => [r.id, r]));
  const committed = response.committed;
  fill(root,
    el("p", { className: `banner ${validateOnly ? "banner-dry" : "banner-ok"}` },
      validateOnly ? "Validated: everything ran and was rolled back (validate only)."
        : committed === false ? "Ran; nothing was committed." : "Committed.",
      response.attempts > 1 ? ` (${response.attempts} attempts)` : "",
      response.replayed ? " (a replay of a stored answer)" : ""),
    (ops.length ? ops : results).map((op, i) =>
      resultCard(ops[i], byId.get(op.id) || results[i], [])));
}

/** Shows a failed call (`error`: an RpcError) of `request`: the failed atomic batch's outcomes
 * when its details carry them, else the field violations put on their operations. */
export function renderFailure(root, request, error) {
  const ops = request.operations || [];
  const carried = error.detail("batchd.v1.BatchExecuteResponse");
  const info = error.detail("google.rpc.ErrorInfo");
  const badRequest = error.detail("google.rpc.BadRequest");
  const violations = (badRequest && badRequest.fieldViolations) || [];
  const failedId = info && info.metadata ? info.metadata.operation_id : undefined;
  const banner = el("div", { className: "banner banner-error" },
    el("p", {}, el("span", { className: "code" }, error.code.toUpperCase()), " ", error.message),
    carried ? el("p", {}, "Nothing was committed.") : null,
    !carried && failedId === undefined && violations.every((v) => operationIndex(v.field) < 0)
      ? [errorInfoList(info), violationsList(violations)] : null);
  if (carried) {
    const byId = new Map((carried.results || []).map((r) => [r.id, r]));
    fill(root, banner, ops.map((op, i) => resultCard(op, byId.get(op.id) || null, [])));
    return;
  }
  fill(root, banner, ops.map((op, i) => {
    const mine = violations.filter((v) => operationIndex(v.field) === i);
    const named = failedId !== undefined && failedId === op.id;
    const card = resultCard(op, named ? { id: op.id, outcome: "OUTCOME_FAILED",
      status: { code: CODES.indexOf(error.code.toUpperCase()), message: error.message,
        details: error.details } } : null, named ? [] : mine);
    return card;
  }));
}
