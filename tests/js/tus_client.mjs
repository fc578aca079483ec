// Uploads FILE to GATEWAY_URL/files/ with tus-js-client, the way a Node program would.
//
// Environment: GATEWAY_URL, TOKEN, FILE, MODE, and per mode:
//   plain     one upload (CHUNK_SIZE optional)
//   resume    abort the upload once PAUSE_AT bytes reached the server (mid-body), then continue it with
//             RESUME_WITH=url (the `uploadUrl` option) or RESUME_WITH=storage (FileUrlStorage +
//             findPreviousUploads + resumeFromPreviousUpload, in URL_STORAGE)
//   deferred  uploadLengthDeferred: true, from a pipe, in CHUNK_SIZE pieces (required)
//   retry     CHUNK_SIZE pieces against a rate-limited gateway: 429 answers are retried
//   parallel  parallelUploads: PARALLEL (concatenation extension)
//   creation-with-upload  uploadDataDuringCreation: true (the first bytes ride on the POST)
//   terminate abort(true) once PAUSE_AT bytes reached the server: tus-js-client sends DELETE
//   probe     continue UPLOAD_URL once, no retries; report what the client did even on failure
// Any mode: UPLOAD_URL continues that upload instead of creating one.
// Prints `RESULT {...}` with the upload URL and every request made; exits 1 on failure.
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { deadline, env, event, report, requireWeb } from './lib.mjs';

const tus = requireWeb('tus-js-client');
if (process.env.TUS_DEBUG) tus.enableDebugLog();

const gateway = env('GATEWAY_URL').replace(/\/$/, '');
const token = env('TOKEN');
const file = env('FILE');
const mode = env('MODE', 'plain');
const size = statSync(file).size;
deadline(Number(env('TIMEOUT_MS', '45000')), `tus ${mode} upload`);

/** Options every upload shares; `log` collects each request and its answer. */
function baseOptions(log, { onBeforeRequestWait, ...extra } = {}) {
  const options = {
    endpoint: gateway + '/files/',
    headers: { Authorization: 'Bearer ' + token },
    metadata: { filename: basename(file), filetype: 'application/octet-stream' },
    retryDelays: [0, 500, 1000, 2000],
    async onBeforeRequest(req) {
      if (onBeforeRequestWait) await onBeforeRequestWait();
      log.push({
        method: req.getMethod(),
        url: req.getURL(),
        offset: req.getHeader('Upload-Offset') ?? null,
        length: req.getHeader('Upload-Length') ?? null,
        deferLength: req.getHeader('Upload-Defer-Length') ?? null,
        concat: req.getHeader('Upload-Concat') ?? null,
      });
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
  if (process.env.UPLOAD_URL && options.uploadUrl === undefined) options.uploadUrl = process.env.UPLOAD_URL;
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

async function plain(extra = {}, source = createReadStream(file)) {
  const log = [];
  const upload = new tus.Upload(source, baseOptions(log, extra));
  await run(upload);
  return { url: upload.url, size, requests: log };
}

/** Lets `limit` bytes of the first PATCH body through, then holds the rest and calls `onLimit`. */
class GateStack {
  constructor(inner, limit, onLimit) {
    this.inner = inner;
    this.limit = limit;
    this.onLimit = onLimit;
  }

  createRequest(method, url) {
    const request = this.inner.createRequest(method, url);
    const send = request.send.bind(request);
    request.send = (body) => {
      if (method === 'PATCH' && body instanceof Readable) {
        let passed = 0;
        const limit = this.limit;
        const onLimit = this.onLimit;
        const gate = new Transform({
          transform(chunk, _encoding, callback) {
            if (passed >= limit) return; // hold: the body never ends, like a stalled network
            const room = limit - passed;
            passed += Math.min(room, chunk.length);
            if (chunk.length >= room) {
              callback(null, chunk.subarray(0, room));
              onLimit();
            } else {
              callback(null, chunk);
            }
          },
        });
        gate.size = body.size;
        body = body.pipe(gate);
      }
      return send(body);
    };
    return request;
  }

  getName() {
    return 'GateStack';
  }
}

async function resume() {
  const pauseAt = Number(env('PAUSE_AT'));
  const resumeWith = env('RESUME_WITH', 'url');
  const storage = resumeWith === 'storage' ? new tus.FileUrlStorage(env('URL_STORAGE')) : undefined;
  const storageOptions = storage ? { urlStorage: storage, storeFingerprintForResuming: true, removeFingerprintOnSuccess: true } : {};

  // first attempt: one PATCH carrying the whole file, aborted after `pauseAt` bytes reached the server
  const firstLog = [];
  let first;
  const paused = new Promise((resolve, reject) => {
    const stack = new GateStack(new tus.DefaultHttpStack(), pauseAt, () => {
      setTimeout(() => first.abort(false).then(() => resolve(pauseAt), reject), 300);
    });
    first = new tus.Upload(createReadStream(file), baseOptions(firstLog, { ...storageOptions, httpStack: stack }));
    first.options.onError = reject;
    first.options.onSuccess = () => reject(new Error('the upload finished before it could be paused'));
    first.start();
  });
  await paused;
  event('paused', { url: first.url, sent: pauseAt });
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
  // removeFingerprintOnSuccess removes the stored URL without waiting for it: look until it is gone
  let leftInStorage = null;
  for (let attempt = 0; storage && attempt < 40; attempt += 1) {
    leftInStorage = (await second.findPreviousUploads()).length;
    if (leftInStorage === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { url: second.url, firstUrl: first.url, size, pausedAfter: pauseAt, resumedFrom, leftInStorage, firstRequests: firstLog, requests: log };
}

async function terminate() {
  const pauseAt = Number(env('PAUSE_AT'));
  const log = [];
  let upload;
  await new Promise((resolve, reject) => {
    const stack = new GateStack(new tus.DefaultHttpStack(), pauseAt, () => {
      setTimeout(() => upload.abort(true).then(resolve, reject), 300);
    });
    upload = new tus.Upload(createReadStream(file), baseOptions(log, { httpStack: stack }));
    upload.options.onError = reject;
    upload.options.onSuccess = () => reject(new Error('the upload finished before it could be terminated'));
    upload.start();
  });
  // abort(true) resolves once the DELETE answered; its answer is in the log
  return { url: upload.url, size, pausedAfter: pauseAt, requests: log };
}

async function retry() {
  // tus-js-client gives up on any 4xx but 409 and 423, and ignores Retry-After: this client
  // retries 429 answers and waits as long as Retry-After says before its next request
  // (as Uppy's Tus plugin does with its rate-limited queue)
  const statuses = [];
  let notBefore = 0;
  const result = await plain({
    retryDelays: [1000, 1000, 1000, 2000, 3000],
    onShouldRetry(err) {
      const response = err.originalResponse;
      const status = response ? response.getStatus() : 0;
      const cause = err.causingError;
      statuses.push(status || `network error: ${(cause && (cause.code || cause.message)) || err.message}`);
      if (status === 429) {
        const seconds = Number(response.getHeader('Retry-After') || '1');
        notBefore = Math.max(notBefore, Date.now() + (Number.isFinite(seconds) ? seconds : 1) * 1000);
        return true;
      }
      return status === 0 || status >= 500 || status === 409 || status === 423;
    },
    onBeforeRequestWait: () => new Promise((resolve) => setTimeout(resolve, Math.max(0, notBefore - Date.now()))),
  });
  return { ...result, retriedStatuses: statuses };
}

/** Continues UPLOAD_URL once, without retries; reports what the client did, also when it failed. */
async function probe() {
  const log = [];
  const upload = new tus.Upload(createReadStream(file), baseOptions(log, { retryDelays: null }));
  try {
    await run(upload);
    return { url: upload.url, finished: true, requests: log };
  } catch (err) {
    return { url: upload.url, finished: false, error: String(err && err.message), requests: log };
  }
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
      // a stream of unknown length (as from a pipe): tus-js-client 4.3's source for an
      // fs.ReadStream with a path never reports its end with a deferred length, and announces
      // a whole chunk's Content-Length for the short last slice, so the body never ends
      result = await plain({ uploadLengthDeferred: true }, createReadStream(file).pipe(new PassThrough()));
      break;
    case 'retry':
      result = await retry();
      break;
    case 'probe':
      result = await probe();
      break;
    case 'creation-with-upload':
      result = await plain({ uploadDataDuringCreation: true });
      break;
    case 'terminate':
      result = await terminate();
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
