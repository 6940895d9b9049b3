// A small decoder of protobuf's binary form for the few messages a Connect error carries as
// details (base64 in `value`): google.rpc.ErrorInfo, BadRequest, RetryInfo, and batchd's own
// BatchExecuteResponse, whose results say what became of every operation of a failed atomic
// batch. Used only when the server sends no `debug` JSON beside a detail.

const OUTCOMES = ["OUTCOME_UNSPECIFIED", "OUTCOME_SUCCEEDED", "OUTCOME_FAILED",
  "OUTCOME_ROLLED_BACK", "OUTCOME_NOT_RUN", "OUTCOME_SKIPPED"];

// Each message: field number -> [json name, type, repeated?]. Types: "string", "int" (32-bit),
// "int64" (a string, as proto3 JSON writes 64-bit integers), "bool", "bytes", "double", "map"
// (string -> string entries), "struct", "outcome", or a message name.
const MESSAGES = {
  "google.rpc.Status": { 1: ["code", "int"], 2: ["message", "string"], 3: ["details", "google.protobuf.Any", true] },
  "google.protobuf.Any": { 1: ["typeUrl", "string"], 2: ["value", "bytes"] },
  "google.rpc.ErrorInfo": { 1: ["reason", "string"], 2: ["domain", "string"], 3: ["metadata", "map"] },
  "google.rpc.BadRequest": { 1: ["fieldViolations", "google.rpc.BadRequest.FieldViolation", true] },
  "google.rpc.BadRequest.FieldViolation": {
    1: ["field", "string"], 2: ["description", "string"], 3: ["reason", "string"] },
  "google.rpc.RetryInfo": { 1: ["retryDelay", "google.protobuf.Duration"] },
  "google.protobuf.Duration": { 1: ["seconds", "int64"], 2: ["nanos", "int"] },
  "batchd.v1.BatchExecuteResponse": {
    1: ["results", "batchd.v1.OperationResult", true], 2: ["committed", "bool"],
    3: ["attempts", "int"], 4: ["replayed", "bool"] },
  "batchd.v1.OperationResult": {
    1: ["id", "string"], 2: ["outcome", "outcome"], 3: ["status", "google.rpc.Status"],
    4: ["rows", "struct", true], 5: ["rowsAffected", "int64"], 6: ["nextPageToken", "string"],
    7: ["totalCount", "int64"], 8: ["columns", "batchd.v1.ResultColumn", true] },
  "batchd.v1.ResultColumn": { 1: ["name", "string"], 2: ["type", "string"] },
};

class Reader {
  constructor(bytes) { this.bytes = bytes; this.pos = 0; }
  done() { return this.pos >= this.bytes.length; }
  varint() {
    let result = 0n, shift = 0n;
    for (;;) {
      const b = this.bytes[this.pos++];
      if (b === undefined) throw new Error("truncated protobuf");
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
    }
  }
  take(n) { const out = this.bytes.subarray(this.pos, this.pos + n); this.pos += n; return out; }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.take(8);
    else if (wire === 2) this.take(Number(this.varint()));
    else if (wire === 5) this.take(4);
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

const text = new TextDecoder();

export function base64Bytes(b64) {
  const clean = b64.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(clean + "===".slice((clean.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Decodes `bytes` as the message `name` into its proto3 JSON form (camelCase names). */
export function decode(name, bytes) {
  if (name === "google.protobuf.Struct") return decodeStruct(bytes);
  const fields = MESSAGES[name];
  if (!fields) return null;
  const out = {};
  const r = new Reader(bytes);
  while (!r.done()) {
    const tag = Number(r.varint());
    const field = fields[tag >> 3];
    if (!field) { r.skip(tag & 7); continue; }
    const [key, type, repeated] = field;
    const value = read(r, type, tag & 7);
    if (type === "map") out[key] = Object.assign(out[key] || {}, value);
    else if (repeated) (out[key] = out[key] || []).push(value);
    else out[key] = value;
  }
  if (name === "google.protobuf.Any") return anyJson(out);
  return out;
}

function read(r, type, wire) {
  if (type === "int") return Number(BigInt.asIntN(32, r.varint()));
  if (type === "int64") return BigInt.asIntN(64, r.varint()).toString();
  if (type === "bool") return r.varint() !== 0n;
  if (type === "outcome") return OUTCOMES[Number(r.varint())] || "OUTCOME_UNSPECIFIED";
  if (type === "double") return new DataView(r.take(8).slice().buffer).getFloat64(0, true);
  if (wire !== 2) { r.skip(wire); return undefined; }
  const bytes = r.take(Number(r.varint()));
  if (type === "string") return text.decode(bytes);
  if (type === "bytes") return bytes;
  if (type === "map") return mapEntry(bytes);
  if (type === "struct") return decodeStruct(bytes);
  if (type === "value") return decodeValue(bytes);
  return decode(type, bytes);
}

function mapEntry(bytes) {
  const r = new Reader(bytes);
  let key = "", value = "";
  while (!r.done()) {
    const tag = Number(r.varint());
    if (tag === 10) key = text.decode(r.take(Number(r.varint())));
    else if (tag === 18) value = text.decode(r.take(Number(r.varint())));
    else r.skip(tag & 7);
  }
  return { [key]: value };
}

function decodeStruct(bytes) {
  const out = {};
  const r = new Reader(bytes);
  while (!r.done()) {
    const tag = Number(r.varint());
    if (tag !== 10) { r.skip(tag & 7); continue; }
    const entry = new Reader(r.take(Number(r.varint())));
    let key = "", value = null;
    while (!entry.done()) {
      const t = Number(entry.varint());
      const b = entry.take(Number(entry.varint()));
      if (t === 10) key = text.decode(b);
      else if (t === 18) value = decodeValue(b);
    }
    out[key] = value;
  }
  return out;
}

function decodeValue(bytes) {
  const r = new Reader(bytes);
  let value = null;
  while (!r.done()) {
    const tag = Number(r.varint());
    const no = tag >> 3;
    if (no === 1) { r.varint(); value = null; }
    else if (no === 2) value = read(r, "double", tag & 7);
    else if (no === 3) value = read(r, "string", tag & 7);
    else if (no === 4) value = read(r, "bool", tag & 7);
    else if (no === 5) value = read(r, "struct", tag & 7);
    else if (no === 6) {
      const list = new Reader(r.take(Number(r.varint())));
      value = [];
      while (!list.done()) {
        const t = Number(list.varint());
        const b = list.take(Number(list.varint()));
        if (t === 10) value.push(decodeValue(b));
      }
    } else r.skip(tag & 7);
  }
  return value;
}

/** An Any as proto3 JSON: `{"@type": url, ...the message's fields}` when its type is known. */
function anyJson(any) {
  const url = any.typeUrl || "";
  const name = url.slice(url.lastIndexOf("/") + 1);
  const inner = any.value ? decode(name, any.value) : null;
  return { "@type": url, ...(inner || {}) };
}
