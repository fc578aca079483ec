// One tus upload with tus-js-client, the way a Node program (or Uppy) sends it, for bench/peers.py.
//
// Environment: FILES_URL (the tus endpoint), FILE, TOKEN (sent as a bearer token),
// CHUNK_SIZE (bytes per PATCH; 0 or unset: one PATCH for the whole file, tus-js-client's default).
// Prints one JSON line: {"url", "seconds"} (seconds from start() to onSuccess); exits 1 on failure.
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import * as tus from 'tus-js-client';

const file = process.env.FILE;
const chunkSize = Number(process.env.CHUNK_SIZE || 0);
const options = {
  endpoint: process.env.FILES_URL,
  headers: { Authorization: `Bearer ${process.env.TOKEN || ''}` },
  metadata: { filename: basename(file), filetype: 'application/octet-stream' },
  uploadSize: statSync(file).size,
  retryDelays: null,
};
if (chunkSize > 0) options.chunkSize = chunkSize;

const started = process.hrtime.bigint();
const upload = new tus.Upload(createReadStream(file), {
  ...options,
  onError(err) {
    console.error(`upload failed: ${err}`);
    process.exit(1);
  },
  onSuccess() {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    console.log(JSON.stringify({ url: upload.url, seconds }));
  },
});
upload.start();
