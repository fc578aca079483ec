// Checks the upload page in headless Debian Chromium (playwright-core): accessibility with
// axe-core, what a card shows, live updates without reloading thumbnails, video playback,
// deleting, screenshots, and a keyboard-only session.
//
// Environment: GATEWAY_URL, USERNAME, PASSWORD, MODE, and per mode:
//   axe       scan the sign-in form, register through it, upload FILES (path-delimiter
//             separated), wait until none is processing, scan the signed-in page
//   features  register, upload IMAGE, BROKEN (an image that cannot be decoded) and VIDEO, then:
//             the failure reason shown on its card, axe scans, screenshots at 1280x800
//             (SCREENSHOT_DIR/sign-in.png, desktop.png, player.png, delete-dialog.png), OTHER uploaded (slowly) while counting thumbnail
//             requests, the video played in the page, delete cancelled then confirmed, and a
//             screenshot at 390x844 (SCREENSHOT_DIR/phone.png) with a scan at that width
//   keyboard  with the keyboard only: sign in (an existing account), pick FILE through the
//             Dashboard's browse button, upload it, delete it; records the focus order and
//             whether each focused control shows a focus indicator
// Optional: CHROMIUM (default /usr/bin/chromium), TIMEOUT_MS, UPLOAD_BYTES_PER_SECOND (for OTHER).
// Prints `RESULT {...}`; exits 1 on failure (the steps taken on stderr).
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { deadline, env, report, requireWeb, tempDir } from './lib.mjs';

const { chromium } = requireWeb('playwright-core');
const AXE_SOURCE = readFileSync(requireWeb.resolve('axe-core/axe.min.js'), 'utf8');

const gateway = env('GATEWAY_URL').replace(/\/$/, '');
const mode = env('MODE');
const username = env('USERNAME');
const password = env('PASSWORD');
const timeoutMs = Number(env('TIMEOUT_MS', '90000'));
deadline(timeoutMs, `page ${mode}`);

const FILE_INPUT = 'input.uppy-Dashboard-input[type=file] >> nth=0';
const UPLOAD_BUTTON = 'button.uppy-StatusBar-actionBtn--upload';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const problems = []; // console errors, uncaught exceptions, failed asset loads
const requests = []; // every request the page made: { url, type }
const started = Date.now();

function step(what) {
  console.error(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${what}`);
}

async function openPage(context) {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(Math.max(timeoutMs / 3, 5000));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('request', (request) => requests.push({ url: request.url(), type: request.resourceType() }));
  page.on('response', (response) => {
    if (response.url().includes('/static/') && response.status() >= 400) problems.push(`asset ${response.status()}: ${response.url()}`);
  });
  step(`open ${gateway}/`);
  await page.goto(gateway + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => window.mediaserver && (!document.getElementById('auth').hidden || !document.getElementById('app').hidden));
  return page;
}

/** axe-core's violations on the page as it is now: [{id, impact, help, nodes: [selector]}]. */
async function axeScan(page, label) {
  step(`axe scan: ${label}`);
  // evaluated through DevTools, not as a page script, so the page's CSP does not apply to it
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 6).map((n) => n.target.join(' ')),
    }));
  });
  return violations;
}

async function signIn(page, action) {
  step(`${action} as ${username}`);
  await page.fill('#login', username);
  await page.fill('#password', password);
  await page.click(action === 'register' ? '#register' : '#sign-in');
  await page.waitForSelector('#uploader .uppy-Dashboard', { state: 'attached' });
  await page.waitForFunction(() => Boolean(window.uppy));
}

async function upload(page, files) {
  step(`upload ${files.map((f) => basename(f)).join(', ')}`);
  const done = page.locator('#uploader button', { hasText: /^Done$/ });
  if (await done.count()) await done.first().click(); // a finished batch is cleared to add files again
  await page.waitForSelector(FILE_INPUT, { state: 'attached' });
  const listed = await page.evaluate(() => window.uppy.getFiles().length);
  await page.setInputFiles(FILE_INPUT, files);
  await page.waitForFunction((n) => window.uppy.getFiles().length === n, listed + files.length);
  const complete = page.evaluate(() => new Promise((resolve) => {
    window.uppy.once('complete', (result) => resolve({
      successful: result.successful.map((f) => f.name), failed: result.failed.map((f) => String(f.error)),
    }));
  }));
  await page.click(UPLOAD_BUTTON);
  return complete;
}

/** Waits until the gallery lists `names`, none of them processing. */
async function settled(page, names) {
  step(`wait for ${names.join(', ')} to be processed`);
  await page.waitForFunction((wanted) => {
    const cards = [...document.querySelectorAll('#gallery .media-item')];
    const named = wanted.map((name) => cards.find((li) => li.querySelector('.media-name')?.textContent === name));
    return named.every((li) => li && li.dataset.status !== 'processing')
      && [...document.querySelectorAll('#gallery .media-thumb img')].every((img) => img.complete && img.naturalWidth > 0);
  }, names, { polling: 100 });
}

async function card(page, name) {
  return page.evaluate((wanted) => {
    const li = [...document.querySelectorAll('#gallery .media-item')]
      .find((e) => e.querySelector('.media-name')?.textContent === wanted);
    if (!li) return null;
    const visible = (e) => Boolean(e) && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
    const reason = li.querySelector('.media-reason');
    const img = li.querySelector('.media-thumb img');
    return {
      id: li.dataset.id,
      status: li.dataset.status,
      statusText: li.querySelector('.status')?.textContent,
      size: li.querySelector('.size')?.textContent,
      reason: reason ? reason.textContent : null,
      reasonVisible: visible(reason),
      text: li.innerText,
      thumbnail: img ? { src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0 } : null,
      play: visible(li.querySelector('.play')),
      deleteLabel: li.querySelector('.delete')?.getAttribute('aria-label') || null,
    };
  }, name);
}

function thumbnailRequests(id) {
  return requests.filter((r) => r.url.includes(`/media/${id}/thumbnail`)).length;
}

async function features(page) {
  const image = env('IMAGE');
  const broken = env('BROKEN');
  const video = env('VIDEO');
  const other = env('OTHER');
  const shots = env('SCREENSHOT_DIR');
  const result = { axe: {} };

  result.axe.signIn = await axeScan(page, 'sign-in form');
  result.passwordRules = await page.evaluate(() => {
    const input = document.getElementById('password');
    const ids = (input.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
    return ids.map((id) => document.getElementById(id)?.textContent.trim()).join(' ');
  });
  await page.screenshot({ path: join(shots, 'sign-in.png') });
  await signIn(page, 'register');
  result.upload = await upload(page, [image, broken, video]);
  const names = [image, broken, video].map((f) => basename(f));
  await settled(page, names);
  result.cards = {};
  for (const name of names) result.cards[name] = await card(page, name);
  result.axe.gallery = await axeScan(page, 'gallery at 1280x800');
  await page.screenshot({ path: join(shots, 'desktop.png'), fullPage: true });

  // an unrelated upload makes progress and finishes: the image's tile stays as it is
  const imageCard = result.cards[basename(image)];
  await page.evaluate((id) => { document.querySelector(`#gallery .media-item[data-id="${id}"] img`).dataset.mark = 'kept'; }, imageCard.id);
  const before = thumbnailRequests(imageCard.id);
  const throttle = Number(process.env.UPLOAD_BYTES_PER_SECOND || 0);
  let cdp = null;
  if (throttle > 0) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: throttle });
  }
  result.otherUpload = await upload(page, [other]);
  if (cdp) await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await settled(page, [basename(other)]);
  await page.waitForTimeout(1500); // events of the finished upload and its media, and the refresh they cause
  result.thumbnailRequests = { before, after: thumbnailRequests(imageCard.id) };
  result.imageTileKept = await page.evaluate((id) => document.querySelector(`#gallery .media-item[data-id="${id}"] img`)?.dataset.mark === 'kept', imageCard.id);
  result.imageSrcAfter = (await card(page, basename(image))).thumbnail?.src;
  result.listRequests = requests.filter((r) => new URL(r.url).pathname === '/api/media').length;
  result.eventStreams = requests.filter((r) => new URL(r.url).pathname === '/api/events').length;

  // the video plays in the page
  step('play the video');
  await page.click(`#gallery .media-item[data-id="${result.cards[basename(video)].id}"] .play`);
  await page.waitForSelector('#player[open] video');
  await page.waitForFunction(() => {
    const v = document.querySelector('#player video');
    return v && v.readyState >= 2 && v.currentTime > 0;
  }, null, { polling: 100 });
  result.video = await page.evaluate(() => {
    const v = document.querySelector('#player video');
    return { readyState: v.readyState, currentTime: v.currentTime, src: v.currentSrc, duration: v.duration };
  });
  result.videoRequests = requests.filter((r) => r.type === 'media').map((r) => new URL(r.url).pathname);
  result.axe.player = await axeScan(page, 'video player');
  await page.screenshot({ path: join(shots, 'player.png') });
  await page.keyboard.press('Escape');
  await page.waitForSelector('#player', { state: 'hidden' });

  // delete: cancel keeps the item, confirm removes it
  const target = result.cards[basename(broken)];
  step('delete: cancel');
  await page.click(`#gallery .media-item[data-id="${target.id}"] .delete`);
  await page.waitForSelector('#confirm-delete[open]');
  result.dialog = await page.evaluate(() => {
    const dialog = document.getElementById('confirm-delete');
    const labelled = document.getElementById(dialog.getAttribute('aria-labelledby'));
    return { text: dialog.innerText, label: labelled?.textContent, modal: dialog.matches(':modal'), focused: document.activeElement?.textContent };
  });
  result.axe.dialog = await axeScan(page, 'delete dialog');
  await page.screenshot({ path: join(shots, 'delete-dialog.png') });
  await page.click('#confirm-delete .cancel');
  await page.waitForSelector('#confirm-delete', { state: 'hidden' });
  result.afterCancel = Boolean(await card(page, basename(broken)));
  step('delete: confirm');
  await page.click(`#gallery .media-item[data-id="${target.id}"] .delete`);
  await page.click('#confirm-delete .confirm');
  await page.waitForFunction((id) => !document.querySelector(`#gallery .media-item[data-id="${id}"]`), target.id);
  result.deletedId = target.id;
  result.token = await page.evaluate(() => localStorage.getItem('mediaserver.token'));

  await page.setViewportSize(PHONE);
  await page.waitForTimeout(300);
  result.axe.phone = await axeScan(page, 'gallery at 390x844');
  await page.screenshot({ path: join(shots, 'phone.png'), fullPage: true });
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  return result;
}

async function axeMode(page) {
  const files = env('FILES').split(':');
  const result = {};
  result.signIn = await axeScan(page, 'sign-in form');
  await signIn(page, 'register');
  result.upload = await upload(page, files);
  await settled(page, files.map((f) => basename(f)));
  result.gallery = await axeScan(page, 'gallery');
  return result;
}

/** Where the focus is: an element's id, or a short description of it. */
async function focused(page) {
  return page.evaluate(() => {
    const e = document.activeElement;
    if (!e || e === document.body) return { name: 'body', indicator: false };
    const style = getComputedStyle(e);
    const indicator = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== 'none';
    const name = e.id ? '#' + e.id
      : e.classList.contains('uppy-Dashboard-browse') ? 'browse'
        : e.classList.contains('uppy-StatusBar-actionBtn--upload') ? 'upload'
          : e.classList.contains('delete') ? 'delete'
            : e.tagName.toLowerCase() + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : '');
    return { name, indicator, text: (e.getAttribute('aria-label') || e.textContent || '').trim().slice(0, 60) };
  });
}

/** Presses Tab until `wanted(focus)` holds (at most `limit` times); every stop on the way. */
async function tabTo(page, wanted, limit, order) {
  for (let i = 0; i < limit; i += 1) {
    await page.keyboard.press('Tab');
    const focus = await focused(page);
    order.push(focus);
    if (wanted(focus)) return focus;
  }
  throw new Error(`not reached with ${limit} tabs; focus went ${order.map((f) => f.name).join(' > ')}`);
}

async function keyboard(page) {
  const file = env('FILE');
  const order = [];
  step('keyboard: sign in');
  await tabTo(page, (f) => f.name === '#login', 10, order);
  await page.keyboard.type(username);
  await tabTo(page, (f) => f.name === '#password', 3, order);
  await page.keyboard.type(password);
  await tabTo(page, (f) => f.name === '#sign-in', 3, order);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#uploader .uppy-Dashboard', { state: 'attached' });
  await page.waitForFunction(() => Boolean(window.uppy));
  step('keyboard: pick a file');
  // the widget is ready for files once it knows the server's size limit (it renders again then)
  await page.waitForFunction(() => window.uppy.opts.restrictions.maxFileSize > 0);
  const browse = await tabTo(page, (f) => f.name === 'browse', 25, order);
  // Uppy may render the widget again just as Enter lands (its hidden file input replaced under
  // the click), so a press that opens nothing is tried again, from the keyboard, a few times
  let chooser = null;
  for (let attempt = 1; attempt <= 3 && !chooser; attempt += 1) {
    const opened = page.waitForEvent('filechooser', { timeout: 7000 });
    await page.keyboard.press('Enter');
    chooser = await opened.catch(async (err) => {
      if (attempt === 3) {
        throw new Error(`no file chooser after 3 presses; focus on ${JSON.stringify(await focused(page))}: ${err.message}`);
      }
      if ((await focused(page)).name !== 'browse') await tabTo(page, (f) => f.name === 'browse', 25, order);
      return null;
    });
  }
  await chooser.setFiles([file]);
  await page.waitForFunction(() => window.uppy.getFiles().length === 1);
  step('keyboard: upload');
  const complete = page.evaluate(() => new Promise((resolve) => window.uppy.once('complete', (r) => resolve(r.successful.length))));
  const uploadButton = await tabTo(page, (f) => f.name === 'upload', 40, order);
  await page.keyboard.press('Enter');
  const uploaded = await complete;
  await settled(page, [basename(file)]);
  step('keyboard: delete');
  const deleteButton = await tabTo(page, (f) => f.name === 'delete', 60, order);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#confirm-delete[open]');
  const inDialog = await focused(page);
  const confirm = await tabTo(page, (f) => f.name === '#confirm-delete-yes', 4, order);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .media-item').length === 0);
  const afterDelete = await focused(page);
  return { order, browse, uploadButton, deleteButton, inDialog, confirm, uploaded, afterDelete };
}

/** What the page shows of its uploads and gallery, for failure reports. */
async function pageState(page) {
  return page.evaluate(() => JSON.stringify({
    files: window.uppy ? window.uppy.getFiles().map((f) => ({ name: f.name, progress: f.progress && f.progress.percentage, error: f.error })) : null,
    buttons: [...document.querySelectorAll('#uploader button')].map((b) => b.className.split(' ')[0] + ':' + b.textContent.trim()).slice(0, 20),
    cards: [...document.querySelectorAll('#gallery .media-item')].map((li) => li.dataset.status + ':' + li.querySelector('.media-name')?.textContent),
    errors: ['auth-error', 'gallery-error'].map((id) => document.getElementById(id).textContent),
  })).catch((e) => `unavailable: ${e.message}`);
}

async function main() {
  const profile = tempDir('profile-');
  const context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'), headless: true, args: FLAGS, viewport: DESKTOP,
  });
  let page;
  try {
    page = await openPage(context);
    let result;
    if (mode === 'axe') result = await axeMode(page);
    else if (mode === 'features') result = await features(page);
    else if (mode === 'keyboard') {
      await page.goto(gateway + '/', { waitUntil: 'load' });
      result = await keyboard(page);
    } else throw new Error(`unknown MODE ${mode}`);
    report({ ...result, problems });
  } catch (err) {
    if (page) console.error('page state: ' + await Promise.race([pageState(page), new Promise((r) => setTimeout(() => r('?'), 3000))]));
    throw err;
  } finally {
    await context.close().catch(() => {});
    profile.remove();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('page test failed:', err && err.stack ? err.stack : err);
    if (problems.length) console.error('page problems:\n' + problems.join('\n'));
    process.exit(1);
  },
);
