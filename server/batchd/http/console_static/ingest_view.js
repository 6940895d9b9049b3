// The file drop: a CSV/Parquet/Arrow/JSON Lines file dropped (or chosen) is PUT to
// /v1/ingest/<table> with a progress bar, and the server's summary and rejected rows shown.

import { contentTypeOf, hasToken, ingest } from "./api.js";
import { ingestCurl } from "./copyas.js";
import { el, fill, valueText } from "./dom.js";

function summaryTable(json) {
  const simple = Object.entries(json).filter(([, v]) => v === null || typeof v !== "object");
  return el("table", { className: "summary" }, el("tbody", {}, simple.map(([k, v]) =>
    el("tr", {}, el("th", {}, k), el("td", {}, valueText(v))))));
}

function rejectsOf(json) {
  return Array.isArray(json.rejects) ? json.rejects : [];
}

function rejectsTable(rejects) {
  // Each reject: {"row": 1-based data row, "index", "code", "message"} (batchd.http.ingest).
  if (rejects.length === 0) return el("p", { className: "empty" }, "No row was rejected.");
  const names = [];
  for (const r of rejects) for (const k of Object.keys(r)) if (!names.includes(k)) names.push(k);
  return [el("h3", {}, `${rejects.length} rejected row(s)`),
    el("table", { className: "rows rejects" },
      el("thead", {}, el("tr", {}, names.map((n) => el("th", {}, n)))),
      el("tbody", {}, rejects.map((r) => el("tr", {}, names.map((n) =>
        el("td", {}, valueText(r[n])))))))];
}

export function setupIngest({ zone, input, tableSelect, modeSelect, progress, status, output, command }) {
  let lastName = "FILE.csv";
  const showCommand = () => {
    command.textContent = tableSelect.value ? ingestCurl({ origin: location.origin,
      table: tableSelect.value, mode: modeSelect.value, fileName: lastName,
      contentType: contentTypeOf(lastName), withToken: hasToken() }) : "";
  };
  tableSelect.addEventListener("change", showCommand);
  modeSelect.addEventListener("change", showCommand);

  async function send(file) {
    lastName = file.name;
    showCommand();
    const table = tableSelect.value;
    if (!table) { fill(status, "Choose a table first."); return; }
    progress.value = 0;
    progress.max = file.size || 1;
    progress.hidden = false;
    fill(status, `Uploading ${file.name} (${file.size} bytes, ${contentTypeOf(file.name)}) into ${table}…`);
    fill(output);
    try {
      const answer = await ingest(table, file, { mode: modeSelect.value,
        onProgress: (sent, total) => { progress.max = total || 1; progress.value = sent; } });
      if (answer.status >= 200 && answer.status < 300 && answer.json) {
        fill(status, `Ingested ${file.name} (${contentTypeOf(file.name)}) into ${table}.`);
        fill(output, summaryTable(answer.json), rejectsTable(rejectsOf(answer.json)));
        zone.dataset.state = "done";
      } else {
        // {"error": {code, message, details}, ...the summary so far}, or a bare Connect error.
        const j = answer.json || {};
        const error = j.error || j;
        fill(status, el("span", { className: "code" }, (error.code || `HTTP ${answer.status}`).toUpperCase()),
          " ", error.message || answer.text.slice(0, 500));
        if (answer.json && answer.json.error) {
          const { error: _, ...summary } = answer.json;
          fill(output, summaryTable(summary), rejectsTable(rejectsOf(summary)));
        }
        zone.dataset.state = "failed";
      }
    } catch (err) {
      fill(status, err.message);
      zone.dataset.state = "failed";
    }
  }

  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) send(file);
  });
  input.addEventListener("change", () => { if (input.files[0]) send(input.files[0]); input.value = ""; });
  return showCommand;
}

/** Fills the table choice with the tables this token may insert into. */
export function ingestTables(select, schema) {
  const tables = (schema.tables || []).filter((t) => (t.operations || []).includes("insert"));
  fill(select, tables.length === 0
    ? el("option", { value: "", disabled: true, selected: true }, "none open to this token")
    : tables.map((t) => el("option", { value: t.name.startsWith("public.") ? t.name.slice(7) : t.name }, t.name)));
}
