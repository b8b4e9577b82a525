// tus-js-client, the tus project's JavaScript client, under Node: it uploads a file to chatfiles
// with the session cookie (`headers`), sending its first chunk with the creation request
// (`uploadDataDuringCreation`), and retries by itself (`retryDelays`): after a failed request it
// asks the server for the offset (HEAD) and goes on from there.
//
// Run by tests/api/tus_clients.rs, which puts a proxy between this script and the server that
// cuts the connection once in the middle of a PATCH body. `require` finds tus-js-client through
// NODE_PATH (the test sets it to the node_modules that `npm ci --prefix tests/tus_clients`
// made).
//
// Usage: node tus_js_upload.js ENDPOINT COOKIE FILE FILENAME FILETYPE CHUNK_SIZE
// Prints one JSON line, {"url": <the upload's URL>, "events": [...]}: every HTTP request the
// client sent, in order, as {"method", "offset" (its Upload-Offset), "status" (null when it got
// no answer), "resultOffset" (the answer's Upload-Offset)}. Exits non-zero when the upload fails.
'use strict';

const fs = require('node:fs');
const tus = require('tus-js-client');

const [endpoint, cookie, path, filename, filetype, chunkSize] = process.argv.slice(2);
const events = [];

function intOrNull(value) {
  return value == null ? null : Number.parseInt(value, 10);
}

// console.log to a pipe is asynchronous: exit only once the line is out.
function finish(code) {
  process.stdout.write(`${JSON.stringify({ url: upload.url, events })}\n`, () => {
    process.exit(code);
  });
}

const upload = new tus.Upload(fs.readFileSync(path), {
  endpoint,
  chunkSize: Number(chunkSize),
  uploadDataDuringCreation: true,
  retryDelays: [0, 100, 500, 1000, 2000],
  headers: { Cookie: cookie },
  metadata: { filename, filetype },
  onBeforeRequest(req) {
    events.push({
      method: req.getMethod(),
      offset: intOrNull(req.getHeader('Upload-Offset')),
      status: null,
      resultOffset: null,
    });
  },
  onAfterResponse(_req, res) {
    const event = events[events.length - 1];
    event.status = res.getStatus();
    event.resultOffset = intOrNull(res.getHeader('Upload-Offset'));
  },
  onError(error) {
    process.stderr.write(`tus-js-client failed: ${error}\n`);
    finish(1);
  },
  onSuccess() {
    finish(0);
  },
});

upload.start();
