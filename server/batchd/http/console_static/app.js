// The console's wiring: the token form, the schema, the editor and its buttons, the results,
// "copy as", and the file drop. Everything the page knows comes from the API with the token
// entered here (kept in memory only: see api.js).

import { RpcError, call, hasToken, setToken } from "./api.js";
import { FORMATS } from "./copyas.js";
import { el, fill } from "./dom.js";
import { EXAMPLE, Editor } from "./editor.js";
import { ingestTables, setupIngest } from "./ingest_view.js";
import { onLocate, onNextPage, renderFailure, renderResponse, resultCard } from "./results.js";
import { renderSchema } from "./schema_view.js";

const $ = (id) => document.getElementById(id);
// The gRPC address copied commands use: config.json's (the server's own setting), else this
// host on gRPC's default port; the field beside "Copy" changes it.
const config = { grpcTarget: `${location.hostname}:50051` };
const editor = new Editor($("batch"), $("suggestions"));

function showError(where, err) {
  fill(where, el("p", { className: "banner banner-error" },
    el("span", { className: "code" }, (err.code || "error").toUpperCase()), " ", err.message));
}

async function loadSchema() {
  fill($("schema"), el("p", { className: "hint" }, "Loading the schema…"));
  try {
    const { data: schema } = await call("GetSchema", {});
    editor.schema = schema;
    renderSchema($("schema"), schema, (body) => { editor.addOperation(body); updateCopy(); });
    ingestTables($("ingest-table"), schema);
    showIngestCommand();
    $("schema").dataset.state = "loaded";
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    editor.schema = { tables: [] };
    fill($("ingest-table"));
    showError($("schema"), err);
    if (err.code === "unauthenticated") {
      $("schema").append(el("p", { className: "hint" }, "Enter a bearer token above."));
    }
    $("schema").dataset.state = "failed";
  }
}

/** The request to send: the editor's, with the mode and validate-only chosen beside it
 * (`validate`: validate only, whatever the check box says — the Validate button). */
function currentRequest(validate = false) {
  const { request, error } = editor.parse();
  if (error) return { error };
  const out = { ...request };
  for (const k of ["mode", "validate_only", "validateOnly"]) delete out[k];
  out.mode = $("mode").value;
  if (validate || $("validate-only").checked) out.validate_only = true;
  return { request: out };
}

async function runBatch(validate) {
  const { request, error } = currentRequest(validate);
  const validateOnly = Boolean(request && request.validate_only);
  updateCopy();
  const results = $("results");
  if (error) { fill(results, el("p", { className: "banner banner-error" }, error)); return; }
  fill(results, el("p", { className: "hint" }, "Running…"));
  results.dataset.state = "running";
  try {
    const { data, trace } = await call("BatchExecute", request);
    renderResponse(results, request, data, { validateOnly });
    results.prepend(traceLine(trace));
    results.dataset.state = "succeeded";
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    renderFailure(results, request, err);
    results.prepend(traceLine(err.trace));
    results.dataset.state = "failed";
  }
}

/** The call's request id (as batchd logs it) and how long it took, for finding it in the logs. */
function traceLine({ requestId, ms }) {
  return el("p", { className: "trace hint" }, `${ms} ms`,
    requestId ? [" · request id ", el("code", { className: "request-id" }, requestId)] : null);
}

function updateCopy() {
  const { request, error } = currentRequest();
  const format = $("copy-format").value;
  $("copy-text").value = error ? `# ${error}`
    : FORMATS[format](request, { grpcTarget: $("grpc-target").value || config.grpcTarget,
      origin: location.origin,
      withToken: hasToken() });
}

async function copyToClipboard() {
  updateCopy();
  try {
    await navigator.clipboard.writeText($("copy-text").value);
    fill($("copy-status"), "Copied.");
  } catch {
    $("copy-text").select();
    fill($("copy-status"), "Select-all done: press Ctrl+C.");
  }
}

async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store", credentials: "omit" });
    if (response.ok) Object.assign(config, await response.json());
  } catch { /* the defaults stand */ }
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken($("token").value);
  $("token").value = "";
  fill($("token-state"), hasToken() ? "A token is set (in this page's memory only)." : "No token.");
  updateCopy();
  loadSchema();
});
$("forget-token").addEventListener("click", () => {
  setToken("");
  fill($("token-state"), "No token.");
  updateCopy();
  loadSchema();
});
onLocate((id) => editor.select(id));
onNextPage(async (operation, token, card) => {
  const op = { ...operation, query: { ...operation.query, page_token: token } };
  delete op.depends_on;
  try {
    const { data } = await call("BatchExecute", { operations: [op], mode: "MODE_ATOMIC" });
    card.replaceWith(resultCard(op, data.results[0]));
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    card.append(el("p", { className: "banner banner-error" },
      el("span", { className: "code" }, err.code.toUpperCase()), " ", err.message));
  }
});
$("batch").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runBatch(false); }
});
$("run").addEventListener("click", () => runBatch(false));
$("validate").addEventListener("click", () => runBatch(true));
$("example").addEventListener("click", () => { editor.setBatch(EXAMPLE); updateCopy(); });
$("format").addEventListener("click", () => {
  const { request, error } = editor.parse();
  if (!error) editor.setBatch(request);
});
$("batch").addEventListener("input", updateCopy);
$("mode").addEventListener("change", updateCopy);
$("validate-only").addEventListener("change", updateCopy);
$("copy-format").addEventListener("change", updateCopy);
$("grpc-target").addEventListener("input", updateCopy);
$("copy").addEventListener("click", copyToClipboard);
const showIngestCommand = setupIngest({ zone: $("drop"), input: $("file"),
  tableSelect: $("ingest-table"), modeSelect: $("ingest-mode"), progress: $("progress"),
  status: $("ingest-status"), output: $("ingest-output"), command: $("ingest-curl") });

editor.setBatch(EXAMPLE);
await loadConfig();
$("grpc-target").value = config.grpcTarget;
updateCopy();
await loadSchema();
document.body.dataset.ready = "true";
