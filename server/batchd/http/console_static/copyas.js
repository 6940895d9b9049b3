// "Copy as": the batch in the editor as a grpcurl command, a curl command (Connect JSON) and
// Python client code. The token is never written into them: they read $BATCHD_TOKEN, so
// nothing pasted into a chat or a ticket carries it.

/** A shell here-document holding `text` (quoted: the shell expands nothing in it). */
function heredoc(text) {
  let mark = "JSON";
  while (text.split("\n").includes(mark)) mark += "_";
  return { mark, body: `${text}\n${mark}` };
}

export function grpcurl(request, { grpcTarget, withToken }) {
  const json = JSON.stringify(request, null, 2);
  const { mark, body } = heredoc(json);
  const auth = withToken ? ` -H "authorization: Bearer $BATCHD_TOKEN"` : "";
  return `grpcurl -plaintext${auth} -d @ ${grpcTarget} batchd.v1.BatchService/BatchExecute <<'${mark}'\n${body}\n`;
}

export function curl(request, { origin, withToken }) {
  const json = JSON.stringify(request, null, 2);
  const { mark, body } = heredoc(json);
  const auth = withToken ? ` \\\n  -H "Authorization: Bearer $BATCHD_TOKEN"` : "";
  return `curl -sS -X POST -H 'Content-Type: application/json'${auth} \\\n  --data-binary @- ${origin}/batchd.v1.BatchService/BatchExecute <<'${mark}'\n${body}\n`;
}

/** A Python string literal of `text` (raw triple-quoted when it can be). */
function pyString(text) {
  if (!text.includes("'''") && !text.endsWith("\\")) return `r'''${text}'''`;
  return JSON.stringify(text); // JSON's string escapes are Python's too
}

export function python(request, { grpcTarget, withToken }) {
  const json = JSON.stringify(request, null, 2);
  const metadata = withToken
    ? `,\n            metadata=[("authorization", f"Bearer {os.environ['BATCHD_TOKEN']}")]` : "";
  return [
    "import json",
    "import os",
    "",
    "from google.protobuf import json_format",
    "",
    "from batchd.client import AtomicBatchError, Client",
    "from batchd.v1 import batch_pb2",
    "",
    `BATCH = ${pyString(json)}`,
    "",
    "request = json_format.Parse(BATCH, batch_pb2.BatchExecuteRequest())",
    `with Client(${JSON.stringify(grpcTarget)}${metadata}) as client:`,
    "    try:",
    "        result = client.execute_request(request)",
    "        print(json.dumps(result.to_dict(), indent=2))",
    "    except AtomicBatchError as err:  # nothing was committed",
    "        print(err.code, err.operation_id, err.outcomes.outcomes)",
    "",
  ].join("\n");
}

export const FORMATS = { grpcurl, curl, python };

/** The curl command that uploads `fileName` as the file drop does. */
export function ingestCurl({ origin, table, mode, fileName, contentType, withToken }) {
  const auth = withToken ? ` -H "Authorization: Bearer $BATCHD_TOKEN"` : "";
  const url = `${origin}/v1/ingest/${encodeURIComponent(table)}?mode=${mode}`;
  const quote = (text) => `'${text.replace(/'/g, "'\\''")}'`;
  return `curl -sS -T ${quote(fileName)} -H ${quote(`Content-Type: ${contentType}`)}${auth} ${quote(url)}`;
}
