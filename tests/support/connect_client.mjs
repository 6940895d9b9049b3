// A Connect client in another language: Node with @connectrpc/connect and
// @connectrpc/connect-node, calling BatchExecute on batchd's HTTP port. No generated code: the
// service comes from a FileDescriptorSet at run time (@bufbuild/protobuf's registry).
//
//   node connect_client.mjs BASE_URL DESCRIPTORS.binpb BATCH.json json|binary
//
// Prints one JSON line: the response (proto3 JSON), or the error's code, message and the
// type names of its details.
import { readFileSync } from "node:fs";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [, , baseUrl, descriptors, batchFile, format] = process.argv;
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)));
const service = registry.getService("batchd.v1.BatchService");
const transport = createConnectTransport({
  baseUrl, httpVersion: "1.1", useBinaryFormat: format === "binary",
});
const client = createClient(service, transport);
const method = service.method.batchExecute;
const request = fromJson(method.input, JSON.parse(readFileSync(batchFile, "utf8")), { registry });
try {
  const response = await client.batchExecute(request);
  console.log(JSON.stringify({ response: toJson(method.output, response, { registry }) }));
} catch (err) {
  const error = ConnectError.from(err);
  console.log(JSON.stringify({
    code: Code[error.code], message: error.rawMessage,
    details: error.details.map((d) => ("desc" in d ? d.desc.typeName : d.type)),
  }));
}
