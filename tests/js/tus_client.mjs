// Uploads FILE to GATEWAY_URL/files/ with tus-js-client, the way a Node program would.
//
// Environment: GATEWAY_URL, TOKEN, FILE, MODE, and per mode:
//   plain     one upload (CHUNK_SIZE optional)
//   resume    abort the upload once PAUSE_AT bytes are sent (mid-body), then continue it with
//             RESUME_WITH=url (the `uploadUrl` option) or RESUME_WITH=storage (FileUrlStorage +
//             findPreviousUploads + resumeFromPreviousUpload, in URL_STORAGE)
//   deferred  uploadLengthDeferred: true, in CHUNK_SIZE pieces
//   retry     CHUNK_SIZE pieces against a rate-limited gateway: 429 answers are retried
//   parallel  parallelUploads: PARALLEL (concatenation extension)
// Prints `RESULT {...}` with the upload URL and every request made; exits 1 on failure.
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { deadline, env, event, report, requireWeb } from './lib.mjs';

const tus = requireWeb('tus-js-client');

const gateway = env('GATEWAY_URL').replace(/\/$/, '');
const token = env('TOKEN');
const file = env('FILE');
const mode = env('MODE', 'plain');
const size = statSync(file).size;
deadline(Number(env('TIMEOUT_MS', '45000')), `tus ${mode} upload`);

/** Options every upload shares; `log` collects each request and its answer. */
function baseOptions(log, extra = {}) {
  const options = {
    endpoint: gateway + '/files/',
    headers: { Authorization: 'Bearer ' + token },
    metadata: { filename: basename(file), filetype: 'application/octet-stream' },
    retryDelays: [0, 500, 1000, 2000],
    onBeforeRequest(req) {
      log.push({ method: req.getMethod(), url: req.getURL(), offset: req.getHeader('Upload-Offset') ?? null });
    },
    onAfterResponse(req, res) {
      const entry = log.findLast((e) => e.method === req.getMethod() && e.url === req.getURL() && e.status === undefined);
      if (entry) {
        entry.status = res.getStatus();
        entry.serverOffset = res.getHeader('Upload-Offset') ?? null;
        entry.retryAfter = res.getHeader('Retry-After') ?? null;
      }
    },
    ...extra,
  };
  const chunkSize = Number(process.env.CHUNK_SIZE || 0);
  if (chunkSize > 0 && options.chunkSize === undefined) options.chunkSize = chunkSize; // never chunkSize: undefined
  return options;
}

/** Runs one tus.Upload to its end; resolves with the upload. */
function run(upload, prepare) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve(upload);
    upload.options.onError = (err) => reject(err);
    Promise.resolve(prepare ? prepare(upload) : undefined).then(() => upload.start(), reject);
  });
}

async function plain(extra = {}) {
  const log = [];
  const upload = new tus.Upload(createReadStream(file), baseOptions(log, extra));
  await run(upload);
  return { url: upload.url, size, requests: log };
}

async function resume() {
  const pauseAt = Number(env('PAUSE_AT'));
  const resumeWith = env('RESUME_WITH', 'url');
  const storage = resumeWith === 'storage' ? new tus.FileUrlStorage(env('URL_STORAGE')) : undefined;
  const storageOptions = storage ? { urlStorage: storage, storeFingerprintForResuming: true, removeFingerprintOnSuccess: true } : {};

  // first attempt: one PATCH carrying the whole file, aborted once `pauseAt` bytes are on the wire
  const firstLog = [];
  const first = new tus.Upload(createReadStream(file), baseOptions(firstLog, storageOptions));
  const paused = await new Promise((resolve, reject) => {
    first.options.onError = reject;
    first.options.onSuccess = () => reject(new Error('the upload finished before it could be paused'));
    first.options.onProgress = (sent) => {
      if (sent >= pauseAt && !first._pausing) {
        first._pausing = true;
        first.abort(false).then(() => resolve(sent), reject);
      }
    };
    first.start();
  });
  event('paused', { url: first.url, sent: paused });
  if (!first.url) throw new Error('no upload URL after the first attempt');

  // second attempt: a new Upload object, as a new process would make it
  const log = [];
  let resumedFrom = null;
  const second = new tus.Upload(createReadStream(file), baseOptions(log, {
    ...storageOptions,
    ...(storage ? {} : { uploadUrl: first.url }),
  }));
  await run(second, async (upload) => {
    if (storage) {
      const previous = await upload.findPreviousUploads();
      if (previous.length === 0) throw new Error('findPreviousUploads found nothing');
      resumedFrom = previous[0].uploadUrl;
      upload.resumeFromPreviousUpload(previous[0]);
    }
  });
  const leftInStorage = storage ? (await second.findPreviousUploads()).length : null;
  return { url: second.url, firstUrl: first.url, size, pausedAfter: paused, resumedFrom, leftInStorage, firstRequests: firstLog, requests: log };
}

async function retry() {
  const statuses = [];
  const result = await plain({
    // tus-js-client gives up on any 4xx but 409 and 423; a rate limit is worth waiting for
    retryDelays: [250, 500, 1000, 1000, 1500, 2000, 2000, 3000],
    onShouldRetry(err, attempt, options) {
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      statuses.push(status);
      if (status === 429) return true;
      return status === 0 || status >= 500 || status === 409 || status === 423;
    },
  });
  return { ...result, retriedStatuses: statuses };
}

async function main() {
  let result;
  switch (mode) {
    case 'plain':
      result = await plain();
      break;
    case 'resume':
      result = await resume();
      break;
    case 'deferred':
      result = await plain({ uploadLengthDeferred: true });
      break;
    case 'retry':
      result = await retry();
      break;
    case 'parallel':
      result = await plain({ parallelUploads: Number(env('PARALLEL', '3')) });
      break;
    default:
      throw new Error(`unknown MODE ${mode}`);
  }
  report(result);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('upload failed:', err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
