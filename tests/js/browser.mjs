// Drives the upload page in headless Debian Chromium with playwright-core.
//
// Environment: GATEWAY_URL, USERNAME, PASSWORD, MODE, and per mode:
//   gallery    register through the page, upload FILES (separated by the path delimiter)
//              through the Dashboard, wait for the gallery to list them (and for thumbnails
//              of images when WAIT_THUMBNAILS=1), save a screenshot to SCREENSHOT
//   interrupt  sign in, upload FILE; once PAUSE_PERCENT of it is sent print
//              `EVENT {"event":"midway"}` and wait (the test stops and restarts the gateway),
//              then wait for the upload to finish by itself
//   reload     sign in, upload FILE, reload the page once PAUSE_PERCENT is sent, add the same
//              file again and upload: it must continue, not start over
// Optional: CHUNK_SIZE (the page's ?chunkSize=), UPLOAD_BYTES_PER_SECOND (a slow uplink),
// CHROMIUM (default /usr/bin/chromium), TIMEOUT_MS. Prints `RESULT {...}`; exits 1 on failure
// (with the steps taken, the page's upload state and its console errors on stderr).
import { basename, delimiter } from 'node:path';
import { deadline, env, event, report, requireWeb, tempDir } from './lib.mjs';

const { chromium } = requireWeb('playwright-core');

const gateway = env('GATEWAY_URL').replace(/\/$/, '');
const mode = env('MODE', 'gallery');
const username = env('USERNAME');
const password = env('PASSWORD');
const chunkSize = Number(process.env.CHUNK_SIZE || 0);
const timeoutMs = Number(env('TIMEOUT_MS', '50000'));
deadline(timeoutMs, `browser ${mode}`);

const FILE_INPUT = 'input.uppy-Dashboard-input[type=file] >> nth=0';
const UPLOAD_BUTTON = 'button.uppy-StatusBar-actionBtn--upload';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const pageUrl = gateway + '/' + (chunkSize > 0 ? `?chunkSize=${chunkSize}` : '');
const problems = []; // console errors, CSP violations, uncaught exceptions, failed asset loads
const started = Date.now();

/** Notes a step on stderr (shown by the test when the script fails). */
function step(what) {
  console.error(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${what}`);
}

async function openPage(context) {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(Math.max(timeoutMs - 8000, 5000)); // fail with Playwright's message before the deadline
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('response', (response) => {
    const url = response.url();
    if (url.includes('/static/') && response.status() >= 400) problems.push(`asset ${response.status()}: ${url}`);
  });
  const throttle = Number(process.env.UPLOAD_BYTES_PER_SECOND || 0);
  if (throttle > 0) {
    // DevTools network emulation: a slow uplink, so an upload is still running when the test acts
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: throttle,
    });
  }
  step(`open ${pageUrl}`);
  await page.goto(pageUrl, { waitUntil: 'load' });
  await page.waitForFunction(() => window.mediaserver && (!document.getElementById('auth').hidden || !document.getElementById('app').hidden));
  return page;
}

async function signIn(page, action) {
  step(`${action} as ${username}`);
  await page.fill('#login', username);
  await page.fill('#password', password);
  await page.click(action === 'register' ? '#register' : '#sign-in');
  await page.waitForSelector('#uploader .uppy-Dashboard', { state: 'attached' });
  await page.waitForFunction(() => Boolean(window.uppy));
}

/** Adds `files` through the Dashboard's file input, clicks upload; resolves with uppy's 'complete' result. */
async function upload(page, files, { onStarted } = {}) {
  step(`add ${files.length} file(s)`);
  await page.setInputFiles(FILE_INPUT, files);
  await page.waitForFunction((n) => window.uppy.getFiles().length === n, files.length);
  const complete = page.evaluate(() => new Promise((resolve) => {
    window.uppy.once('complete', (result) => resolve({
      successful: result.successful.map((f) => ({ name: f.name, size: f.size, uploadURL: f.uploadURL })),
      failed: result.failed.map((f) => ({ name: f.name, error: String(f.error) })),
    }));
  }));
  await page.click(UPLOAD_BUTTON);
  step('upload started');
  if (onStarted) await onStarted();
  const result = await complete;
  step(`upload complete: ${result.successful.length} done, ${result.failed.length} failed`);
  return result;
}

async function waitForProgress(page, percent) {
  step(`wait for ${percent}% sent`);
  await page.waitForFunction(
    (p) => window.uppy.getFiles().some((f) => f.progress && f.progress.bytesUploaded >= (f.size * p) / 100),
    percent, { polling: 20 },
  );
  return page.evaluate(() => window.uppy.getFiles().map((f) => ({ name: f.name, sent: f.progress.bytesUploaded, size: f.size })));
}

/** Waits until the gallery lists every file named in `names`. */
async function waitForGallery(page, names) {
  step(`wait for ${names.join(', ')} in the gallery`);
  await page.waitForFunction((wanted) => {
    const shown = [...document.querySelectorAll('#gallery .media-name')].map((e) => e.textContent);
    return wanted.every((name) => shown.includes(name));
  }, names, { polling: 100 });
}

async function galleryItems(page) {
  return page.$$eval('#gallery .media-item', (items) => items.map((li) => {
    const img = li.querySelector('.media-thumb img');
    const placeholder = li.querySelector('.media-placeholder');
    return {
      id: li.dataset.id,
      filename: li.querySelector('.media-name')?.textContent,
      size: li.querySelector('.size')?.textContent,
      status: li.querySelector('.status')?.textContent,
      thumbnail: img ? { src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0 } : null,
      placeholder: placeholder ? placeholder.textContent : null,
    };
  }));
}

async function gallery(page) {
  const files = env('FILES').split(delimiter);
  await signIn(page, 'register');
  const result = await upload(page, files);
  await waitForGallery(page, files.map((f) => basename(f)));
  if (process.env.WAIT_THUMBNAILS === '1') {
    // images get a thumbnail once processed; the page polls while anything is processing
    await page.waitForFunction(() => {
      const items = [...document.querySelectorAll('#gallery .media-item')];
      return items.every((li) => li.dataset.status !== 'processing')
        && [...document.querySelectorAll('#gallery .media-thumb img')].every((img) => img.complete && img.naturalWidth > 0);
    }, null, { polling: 200 });
  }
  const screenshot = process.env.SCREENSHOT;
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  return { upload: result, items: await galleryItems(page), account: await page.textContent('#account-name') };
}

async function interrupt(page) {
  const file = env('FILE');
  await signIn(page, 'login');
  const result = await upload(page, [file], {
    onStarted: async () => {
      const progress = await waitForProgress(page, Number(env('PAUSE_PERCENT', '30')));
      event('midway', { progress });
    },
  });
  await waitForGallery(page, [basename(file)]);
  return { upload: result, items: await galleryItems(page) };
}

async function reload(page) {
  const file = env('FILE');
  await signIn(page, 'login');
  await page.setInputFiles(FILE_INPUT, [file]);
  await page.click(UPLOAD_BUTTON);
  const before = await waitForProgress(page, Number(env('PAUSE_PERCENT', '30')));
  event('reloading', { progress: before });
  step('reload');
  await page.reload({ waitUntil: 'load' });
  // the token is kept: the page signs in by itself
  await page.waitForFunction(() => window.uppy && !document.getElementById('app').hidden);
  const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')));
  const result = await upload(page, [file]);
  await waitForGallery(page, [basename(file)]);
  const storedAfter = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::')));
  return { before, storedBeforeResume: stored, storedAfter, upload: result, items: await galleryItems(page) };
}

/** What the page shows of its uploads, for failure reports. */
async function uploadState(page) {
  return page.evaluate(() => JSON.stringify({
    files: window.uppy ? window.uppy.getFiles().map((f) => ({
      name: f.name, size: f.size, progress: f.progress, error: f.error, uploadURL: f.uploadURL,
    })) : null,
    authError: document.getElementById('auth-error').textContent,
    galleryError: document.getElementById('gallery-error').textContent,
  }));
}

async function main() {
  const profile = tempDir('profile-');
  const context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
  });
  let page;
  try {
    page = await openPage(context);
    let result;
    if (mode === 'gallery') result = await gallery(page);
    else if (mode === 'interrupt') result = await interrupt(page);
    else if (mode === 'reload') result = await reload(page);
    else throw new Error(`unknown MODE ${mode}`);
    report({ ...result, problems });
  } catch (err) {
    if (page) {
      const state = await Promise.race([
        uploadState(page).catch((e) => `unavailable: ${e.message}`),
        new Promise((resolve) => setTimeout(() => resolve('unavailable: timed out'), 3000)),
      ]);
      console.error('page state: ' + state);
    }
    throw err;
  } finally {
    await context.close().catch(() => {});
    profile.remove();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('browser test failed:', err && err.stack ? err.stack : err);
    if (problems.length) console.error('page problems:\n' + problems.join('\n'));
    process.exit(1);
  },
);
