// consent.mjs - opens a consent-centre page in the system's headless
// Chromium, reports what a buyer sees and can leave a list with a click.
//
//   node consent.mjs URL SCREENSHOT_PATH [--expect-record HEX]
//        [--withdraw HEX] [--ignore-https-errors]
//
// Prints one JSON line {"title", "items": [{"record", "state"}], "status"}
// read from the page's .consent[data-record] cards, and with --withdraw a
// second line after clicking that card's .withdraw button.  Saves a
// full-page screenshot of the last page.  Exits 0, or 1 with a message on
// stderr: a bad argument, a page that did not load or answered 4xx/5xx, an
// expected record missing, a record without a withdraw button, or one
// still active after the click.  The JSON and the screenshot come first
// whenever the page loaded, so a failure can be looked at.
//
// Uses /usr/bin/chromium (Debian's package; $PERMIT_CHROMIUM overrides)
// with a fresh profile in a temporary directory, removed at the end; never
// a browser downloaded by Playwright.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const STEP_MS = 20000; // bound on every single step
const WHOLE_MS = 150000; // bound on the whole run, closing included
const USAGE =
  'usage: node consent.mjs URL SCREENSHOT_PATH [--expect-record HEX] ' +
  '[--withdraw HEX] [--ignore-https-errors]';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

class Failure extends Error {}

function parseArgs(argv) {
  const o = { url: null, shot: null, expect: null, withdraw: null, insecure: false };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--expect-record' || a === '--withdraw') {
      const v = argv[++i];
      // Checked strictly: the id goes into a CSS selector.
      if (v === undefined || !/^[0-9a-fA-F]{32}$/.test(v))
        throw new Failure(`${a} needs a record id of 32 hex digits\n${USAGE}`);
      o[a === '--withdraw' ? 'withdraw' : 'expect'] = v.toLowerCase();
    } else if (a === '--ignore-https-errors') {
      o.insecure = true;
    } else if (a.startsWith('--')) {
      throw new Failure(`unknown option ${a}\n${USAGE}`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 2) throw new Failure(USAGE);
  [o.url, o.shot] = positional;
  let u;
  try {
    u = new URL(o.url);
  } catch {
    throw new Failure(`not a URL: ${o.url}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new Failure(`not an http or https URL: ${o.url}`);
  return o;
}

// What the page shows, from the stable hooks of permit_web_consent_page.
async function snapshot(page, response) {
  const items = await page
    .locator('.consent[data-record]')
    .evaluateAll((cards) =>
      cards.map((c) => ({
        record: c.getAttribute('data-record'),
        state: c.getAttribute('data-state'),
      })),
    );
  return {
    title: await page.title(),
    items,
    status: response ? response.status() : null,
  };
}

function findItem(snap, hex) {
  return snap.items.find((it) => (it.record || '').toLowerCase() === hex);
}

function checkStatus(snap, what) {
  if (snap.status === null) throw new Failure(`${what}: no HTTP response`);
  if (snap.status >= 400) throw new Failure(`${what}: HTTP ${snap.status}`);
}

async function run(o, page) {
  const response = await page.goto(o.url, { waitUntil: 'load', timeout: STEP_MS });
  const before = await snapshot(page, response);
  console.log(JSON.stringify(before));
  let failure = null;
  try {
    checkStatus(before, o.url);
    if (o.expect && !findItem(before, o.expect))
      throw new Failure(`record ${o.expect} not found on the page`);
    if (o.withdraw) {
      const item = findItem(before, o.withdraw);
      if (!item) throw new Failure(`record ${o.withdraw} not found on the page`);
      const button = page.locator(`.consent[data-record="${o.withdraw}" i] .withdraw`);
      const n = await button.count();
      if (n !== 1)
        throw new Failure(
          `record ${o.withdraw} (state "${item.state}") has ${n} withdraw buttons, not 1`,
        );
      // Waiting is armed before the click so a fast answer is not missed;
      // the result is the response of the last page after any redirect.
      const [after_response] = await Promise.all([
        page.waitForNavigation({ waitUntil: 'load', timeout: STEP_MS }),
        button.click({ timeout: STEP_MS }),
      ]);
      const after = await snapshot(page, after_response);
      console.log(JSON.stringify(after));
      checkStatus(after, 'after withdrawing');
      const now = findItem(after, o.withdraw);
      if (now && now.state === 'active')
        throw new Failure(`record ${o.withdraw} is still active after the click`);
    }
  } catch (e) {
    failure = e;
  }
  // The last page is kept even when a check failed: it shows why.
  await page.screenshot({ path: o.shot, fullPage: true, timeout: STEP_MS });
  if (failure) throw failure;
}

// Resolves |promise| or rejects after |ms|: closing must not hang forever.
function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const profile = mkdtempSync(join(tmpdir(), 'permit-chromium-'));
  // If the whole run hangs, exit anyway: Playwright kills the browser it
  // launched when this process exits.
  const watchdog = setTimeout(() => {
    console.error(`consent.mjs: gave up after ${WHOLE_MS} ms`);
    rmSync(profile, { recursive: true, force: true });
    process.exit(1);
  }, WHOLE_MS);
  watchdog.unref();
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.PERMIT_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      ignoreHTTPSErrors: o.insecure,
      timeout: STEP_MS,
      // A phone: the pages are meant to be read on one.
      viewport: { width: 412, height: 915 },
      isMobile: true,
      hasTouch: true,
    });
    context.setDefaultTimeout(STEP_MS);
    context.setDefaultNavigationTimeout(STEP_MS);
    const page = context.pages()[0] || (await context.newPage());
    await run(o, page);
  } finally {
    if (context) await bounded(context.close(), STEP_MS, 'closing the browser').catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    // The watchdog stays armed (unref'd): it ends a process that would
    // not exit on its own.
  }
}

main().catch((e) => {
  const msg = e instanceof Failure ? e.message : String((e && e.message) || e);
  // Playwright colours its call logs; a log file wants plain text.
  console.error(`consent.mjs: ${msg.replace(/\x1b\[[0-9;]*m/g, '')}`);
  process.exitCode = 1;
});
