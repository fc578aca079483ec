// The upload page when its Uppy bundle does not arrive: headless Debian Chromium (playwright-core)
// opens the page with /static/vendor/uppy.min.js answered 404 (as a gateway without the bundle
// does), registers USERNAME, and reports what the page says in its upload section, once right
// after signing in and again after the gallery has refreshed (which clears the gallery's errors).
//
// Environment: GATEWAY_URL, USERNAME, PASSWORD; optional CHROMIUM, TIMEOUT_MS. Prints `RESULT {...}`.
import { deadline, env, report, requireWeb, tempDir } from './lib.mjs';

const { chromium } = requireWeb('playwright-core');

const gateway = env('GATEWAY_URL').replace(/\/$/, '');
const timeoutMs = Number(env('TIMEOUT_MS', '30000'));
deadline(timeoutMs, 'widget_missing');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function uploaderMessage() {
  const element = document.getElementById('uploader-error');
  return { text: element.textContent, hidden: element.hidden, visible: element.offsetParent !== null };
}

async function main() {
  const profile = tempDir('profile-');
  const context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'), headless: true, args: FLAGS,
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(Math.max(timeoutMs - 8000, 5000));
    const blocked = [];
    await page.route('**/static/vendor/uppy.min.js*', (route) => {
      blocked.push(route.request().url());
      return route.fulfill({ status: 404, contentType: 'text/plain; charset=UTF-8', body: '404 Not Found\n' });
    });
    await page.goto(gateway + '/', { waitUntil: 'load' });
    await page.waitForFunction(() => window.mediaserver && !document.getElementById('auth').hidden);
    await page.fill('#login', env('USERNAME'));
    await page.fill('#password', env('PASSWORD'));
    await page.click('#register');
    await page.waitForFunction(() => !document.getElementById('app').hidden);
    const afterSignIn = await page.evaluate(uploaderMessage);
    // the gallery's first load has finished when its empty note or its items show
    await page.waitForFunction(() => !document.getElementById('gallery-empty').hidden
      || document.querySelectorAll('#gallery li').length > 0);
    await page.evaluate(() => window.mediaserver.refreshGallery());
    const afterRefresh = await page.evaluate(uploaderMessage);
    report({
      blocked,
      afterSignIn,
      afterRefresh,
      galleryError: await page.evaluate(() => document.getElementById('gallery-error').textContent),
      uppyLoaded: await page.evaluate(() => Boolean(window.Uppy)),
    });
  } finally {
    await context.close().catch(() => {});
    profile.remove();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('widget_missing failed:', err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
