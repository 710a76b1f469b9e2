#!/usr/bin/env node
// Parse and validate an AsyncAPI document with the official parser (and its Avro schema
// parser, so that the messages' .avsc payloads are parsed too), then print one JSON object on
// standard output for tests/unit/test_asyncapi.py:
//
//   {"diagnostics": [{severity, code, message, path}], "channels": [{id, address,
//    bindings, messages: [{id, name, contentType, schemaFormat, payloadType, payloadFields,
//    headers, bindings}]}], "servers": [...], "operations": [...]}
//
// Exit status 0 when the document parsed, 1 when it did not (diagnostics say why), 2 on a
// usage error. Severity: 0 error, 1 warning, 2 information, 3 hint (Spectral's levels).
'use strict';

const path = require('path');
const { Parser, fromFile } = require('@asyncapi/parser');
const { AvroSchemaParser } = require('@asyncapi/avro-schema-parser');

// {protocol: binding value} of a bindings collection
function bindings(collection) {
  const out = {};
  for (const binding of collection.all()) {
    out[binding.protocol()] = binding.value();
  }
  return out;
}

// A message payload as JSON Schema: a multi-format payload (the .avsc files) carries the
// Avro schema parser's translation under `schema`.
function payloadSchema(payload) {
  if (!payload) return null;
  const raw = payload.json();
  return raw && raw.schemaFormat && raw.schema ? raw.schema : raw;
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node validate.js ASYNCAPI.yaml\n');
    return 2;
  }
  const parser = new Parser();
  parser.registerSchemaParser(AvroSchemaParser());
  const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
  const out = {
    diagnostics: diagnostics.map((d) => ({
      severity: d.severity, code: String(d.code), message: d.message, path: d.path,
    })),
    channels: [],
    servers: [],
    operations: [],
  };
  if (document) {
    for (const server of document.servers().all()) {
      out.servers.push({ id: server.id(), host: server.host(), protocol: server.protocol(),
                         bindings: bindings(server.bindings()) });
    }
    for (const channel of document.channels().all()) {
      const messages = [];
      for (const message of channel.messages().all()) {
        const schema = payloadSchema(message.payload());
        messages.push({
          id: message.id(),
          name: message.name(),
          contentType: message.contentType(),
          schemaFormat: message.schemaFormat(),
          payloadType: schema ? schema.type : null,
          payloadFields: schema && schema.properties ? Object.keys(schema.properties) : [],
          headers: message.headers() ? message.headers().json() : null,
          bindings: bindings(message.bindings()),
        });
      }
      out.channels.push({ id: channel.id(), address: channel.address(), bindings: bindings(channel.bindings()),
                          messages });
    }
    for (const op of document.operations().all()) {
      out.operations.push({ id: op.id(), action: op.action(),
                            channels: op.channels().all().map((c) => c.id()) });
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  return document ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (err) => {
  process.stderr.write(`validate.js: ${err && err.stack ? err.stack : err}\n`);
  process.exitCode = 1;
});
