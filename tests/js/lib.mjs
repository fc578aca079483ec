// Helpers shared by the Node client scripts. The npm packages live in web/node_modules
// (installed by scripts/build_web.sh), so they are loaded relative to web/package.json.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const requireWeb = createRequire(new URL('../../web/package.json', import.meta.url));

/** The environment variable `name`; exits with a message when it is missing. */
export function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback !== undefined) return fallback;
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
}

/** One machine-readable line for the Python side: `RESULT {...}`. */
export function report(result) {
  console.log('RESULT ' + JSON.stringify(result));
}

/** One progress line for the Python side: `EVENT {...}` (flushed at once). */
export function event(name, fields = {}) {
  process.stdout.write('EVENT ' + JSON.stringify({ event: name, ...fields }) + '\n');
}

/** Ends the process with status 1 after `ms`, so a hung client never blocks the tests. */
export function deadline(ms, what) {
  const timer = setTimeout(() => {
    console.error(`timed out after ${ms} ms: ${what}`);
    process.exit(1);
  }, ms);
  timer.unref();
  return timer;
}

/** A fresh temporary folder, removed by the returned function. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
