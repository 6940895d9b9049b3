// The console's only way to the server: the same authenticated API any client uses. Unary
// Connect calls with JSON bodies (`POST /batchd.v1.BatchService/<Method>`), and the ingest
// endpoint (`PUT /v1/ingest/<table>`). The bearer token lives in this module's memory only:
// never in web storage, a cookie or the URL, so a reload forgets it.

import { base64Bytes, decode } from "./protowire.js";

let token = "";

export function setToken(value) { token = value.trim(); }
export function hasToken() { return token !== ""; }

function headers(extra = {}) {
  const out = { ...extra };
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

/** An RPC that failed: the Connect code ("already_exists"), its message, and its details as
 * proto3 JSON objects (each with "@type"). */
export class RpcError extends Error {
  constructor(code, message, details = [], httpStatus = 0) {
    super(message);
    this.code = code;
    this.details = details;
    this.httpStatus = httpStatus;
    this.trace = { requestId: "", ms: 0 };
  }
  detail(typeName) {
    return this.details.find((d) => (d["@type"] || "").endsWith(`/${typeName}`)) || null;
  }
}

/** A Connect error detail as proto3 JSON: its `debug` form when sent, else its decoded value. */
export function detailJson(detail) {
  const url = `type.googleapis.com/${detail.type}`;
  if (detail.debug && typeof detail.debug === "object") return { "@type": url, ...detail.debug };
  let decoded = null;
  try { decoded = decode(detail.type, base64Bytes(detail.value || "")); } catch { decoded = null; }
  return { "@type": url, ...(decoded || { undecoded: detail.value }) };
}

/** Calls `method` of batchd.v1.BatchService with `body` (proto3 JSON): `{data, trace}` (the
 * answer, and the call's x-request-id and milliseconds), or throws an RpcError (its `trace` too). */
export async function call(method, body) {
  const started = performance.now();
  let response;
  try {
    response = await fetch(`/batchd.v1.BatchService/${method}`, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", "Connect-Protocol-Version": "1" }),
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    throw new RpcError("unavailable", `the server could not be reached: ${err.message}`);
  }
  const payload = await response.text();
  const trace = { requestId: response.headers.get("x-request-id") || "",
    ms: Math.round(performance.now() - started) };
  let json = null;
  try { json = payload ? JSON.parse(payload) : {}; } catch { json = null; }
  if (response.ok && json !== null) return { data: json, trace };
  const error = json && typeof json.code === "string"
    ? new RpcError(json.code, json.message || "", (json.details || []).map(detailJson), response.status)
    : new RpcError("unknown", `HTTP ${response.status}: ${payload.slice(0, 300)}`, [], response.status);
  error.trace = trace;
  throw error;
}

const TYPES = { csv: "text/csv", tsv: "text/csv", parquet: "application/vnd.apache.parquet",
  arrow: "application/vnd.apache.arrow.stream", jsonl: "application/x-ndjson",
  ndjson: "application/x-ndjson" };

/** The Content-Type the ingest endpoint reads a file of this name as. */
export function contentTypeOf(fileName) {
  const ext = fileName.slice(fileName.lastIndexOf(".") + 1).toLowerCase();
  return TYPES[ext] || "text/csv";
}

/** Uploads `file` into `table` (XMLHttpRequest: fetch reports no upload progress);
 * `onProgress(sent, total)` as it goes. Resolves to {status, json, text}. */
export function ingest(table, file, { mode = "independent", onProgress = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const query = new URLSearchParams({ mode });
    xhr.open("PUT", `/v1/ingest/${encodeURIComponent(table)}?${query}`);
    for (const [k, v] of Object.entries(headers({ "Content-Type": contentTypeOf(file.name) }))) {
      xhr.setRequestHeader(k, v);
    }
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener("load", () => {
      let json = null;
      try { json = JSON.parse(xhr.responseText); } catch { json = null; }
      onProgress(file.size, file.size);
      resolve({ status: xhr.status, json, text: xhr.responseText });
    });
    xhr.addEventListener("error", () => reject(new Error("the upload failed (network error)")));
    xhr.addEventListener("abort", () => reject(new Error("the upload was aborted")));
    xhr.send(file);
  });
}
