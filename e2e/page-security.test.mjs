// The page's own safety in headless Chromium against the real jobs binary: a sign-in link that
// cannot be used (malformed, expired, refused by the API) is a message saying what to do, and
// nothing polls behind it; every page response carries the security headers of vercel.json and
// the page works under its Content-Security-Policy with no violation. (vercel-dev.test.mjs
// checks the headers and the policy through the vercel dev stand-in too.)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  axe, browserAndService, mintToken, PAGE_HEADERS, POLLING, row, securityHeaderProblems, shot, watchCsp,
} from './harness.mjs';

const SECRET = 'e2e-page-security-secret';
const setup = browserAndService({ JOBS_AUTH_SECRET: SECRET });

const AGAIN = 'Open the Task Manager again from the application that sent you here';
const base64url = (text) => Buffer.from(text).toString('base64url');
const HEADER = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

/** The page's calls to the API, by action, as they are sent. */
function apiRequests(page) {
  const seen = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.pathname.startsWith('/api/')) seen.push(url.searchParams.get('action'));
  });
  return seen;
}

/**
 * Runs the page's timers through a minute of its time (the idle refresh is every 10 s, the live
 * one every second) and returns the API calls it made meanwhile.
 */
async function aMinuteLater(page, seen) {
  const before = seen.length;
  for (let i = 0; i < 6; i++) {
    await page.clock.fastForward(11000);
    await page.waitForTimeout(250); // the fetches a timer started, answered
  }
  return seen.slice(before);
}

/** Opens `/#token=<token>` in a fresh context with a fake clock; returns the page and what it sent. */
async function openWithToken(token, search = '') {
  const context = await setup.browser.newContext();
  const csp = await watchCsp(context);
  await context.clock.install();
  const page = await context.newPage();
  const seen = apiRequests(page);
  await page.goto(`${setup.jobs.base}/${search}#token=${token}`);
  return { context, page, seen, csp };
}

describe('a sign-in link that cannot be used is a message, and nothing polls', () => {
  const rows = [
    // [name, the fragment's token as the link carries it, the message, the API calls that may
    // come before it shows, each at most once]
    ['not a JWT (one part)', 'not-a-jwt', 'This sign-in link is invalid', []],
    ['two parts', `${HEADER}.${base64url('{"sub":"x"}')}`, 'This sign-in link is invalid', []],
    ['bad base64 in the payload', `${HEADER}.${encodeURIComponent('%%%')}.c2ln`, 'This sign-in link is invalid', []],
    ['a fragment that is not URL-encoded', `${HEADER}.%%%.c2ln`, 'This sign-in link is invalid', []],
    ['a payload that is not JSON', `${HEADER}.${base64url('not json')}.c2ln`, 'This sign-in link is invalid', []],
    ['expired an hour ago', () => mintToken(SECRET, 'late-user', { expiresIn: -3600 }), 'This sign-in link has expired', []],
    // Well-formed and unexpired, so the page asks what it opens with (the list, failures by
    // cause and over time, the live stream: which of them go out before the first 401 comes
    // back depends on timing); the API answers 401 and the page stops.
    ['signed with another secret', () => mintToken('not-the-secret', 'forger'), 'The jobs API refused this sign-in link (Invalid or expired token)', ['list', 'groups', 'failures', 'watch']],
  ];
  for (const [name, make, message, mayCallBefore] of rows) {
    test(`${name}: "${message}…", no refresh, 0 axe and 0 CSP violations`, async () => {
      const token = typeof make === 'function' ? make() : make;
      const { context, page, seen, csp } = await openWithToken(token);
      const alert = page.getByRole('alert').filter({ hasText: message });
      await alert.waitFor();
      assert.match(await alert.textContent(), new RegExp(`${AGAIN}`));
      assert.equal(await page.getByRole('heading', { name: 'Sign in again' }).isVisible(), true);
      assert.equal(await page.locator('#signed-in').textContent(), 'Not signed in');
      assert.equal(new URL(page.url()).hash, '', 'the token is still removed from the address bar');
      assert.equal(await page.locator('#tasks-panel').isHidden(), true, 'no task list that cannot load');
      await shot(page, `signin-${name.replace(/\W+/g, '-')}`);
      await page.waitForTimeout(300);
      const before = `API calls before the message: ${seen.join()}`;
      assert.ok(seen.every((action) => mayCallBefore.includes(action)), before);
      assert.equal(new Set(seen).size, seen.length, before);
      if (mayCallBefore.length > 0) assert.ok(seen.length > 0, before);
      assert.deepEqual(await aMinuteLater(page, seen), [], 'no API call in a minute of the page\'s time');
      assert.deepEqual((await axe(page)).violations, []);
      assert.deepEqual(csp, []);
      await context.close();
    });
  }

  test('the same minute with a good link refreshes (the count above can see polling)', async () => {
    const user = 'signed-in-user';
    const { context, page, seen } = await openWithToken(mintToken(SECRET, user), POLLING);
    await page.getByText(`Signed in as ${user}`).waitFor();
    await page.getByText('No tasks yet.').waitFor();
    const later = await aMinuteLater(page, seen);
    assert.ok(later.filter((a) => a === 'list').length >= 3, `refreshes: ${later.join()}`);
    assert.equal(await page.locator('#signin').isHidden(), true);
    await context.close();
  });

  test('after a refusal the page waits for the user, and a new link signs in', async () => {
    const user = 'comes-back';
    const { context, page, seen } = await openWithToken(mintToken('not-the-secret', user));
    await page.getByText('The jobs API refused this sign-in link').waitFor();
    // Tab shown again: still nothing.
    await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    assert.deepEqual(await aMinuteLater(page, seen), []);
    // The host application opens the page again with a good token (same tab, fragment only).
    const good = mintToken(SECRET, user);
    const created = await fetch(`${setup.jobs.base}/api/jobs?action=create`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${good}` },
      body: JSON.stringify({ type: 'demo', payload: { steps: 1, stepMs: 0 } }),
    });
    const { taskId } = await created.json();
    await page.goto(`${setup.jobs.base}/#token=${good}`);
    await page.getByText(`Signed in as ${user}`).waitFor();
    await row(page, taskId).waitFor();
    assert.equal(await page.locator('#signin').isHidden(), true);
    await context.close();
  });

  test('without a link, a service that wants one: the message names it, and a user id entered asks again', async () => {
    const context = await setup.browser.newContext();
    await context.clock.install();
    await context.addInitScript(() => localStorage.setItem('jobs.userId', 'typed-user'));
    const page = await context.newPage();
    const seen = apiRequests(page);
    await page.goto(`${setup.jobs.base}/`);
    await page.getByRole('alert').filter({ hasText: 'The jobs API needs a sign-in link (Missing bearer token)' }).waitFor();
    assert.deepEqual(await aMinuteLater(page, seen), []);
    assert.deepEqual((await axe(page)).violations, []);
    // The user acts: the page asks again (and is refused again, so says so again).
    const asked = page.waitForRequest((r) => new URL(r.url()).searchParams.get('action') === 'list');
    await page.getByLabel('User id').fill('someone-else');
    await page.getByRole('button', { name: 'Use' }).click();
    await asked;
    await page.getByRole('alert').filter({ hasText: 'Missing bearer token' }).waitFor();
    assert.equal(await page.locator('#tasks-panel').isHidden(), true);
    await context.close();
  });

  test('a link that expires while the page is open stops the refresh at the first 401', async () => {
    const user = 'expires-later';
    // Accepted for 5 more seconds of real time (the server's clock), the 30 s leeway included.
    const validUntil = Date.now() + 5000;
    const { context, page, seen } = await openWithToken(mintToken(SECRET, user, { expiresIn: -25 }), POLLING);
    await page.getByText(`Signed in as ${user}`).waitFor();
    await page.getByText('No tasks yet.').waitFor();
    await page.waitForTimeout(validUntil + 1000 - Date.now());
    const later = await aMinuteLater(page, seen);
    await page.getByText('The jobs API refused this sign-in link (Invalid or expired token)').waitFor();
    assert.deepEqual(later.sort(), ['groups', 'list'], 'one refresh was refused, then none');
    await context.close();
  });

  test('a live stream ends when its link expires: the reconnect is refused and the page stops', async () => {
    const user = 'expires-while-pushed';
    const validUntil = Date.now() + 5000;
    const { context, page, seen } = await openWithToken(mintToken(SECRET, user, { expiresIn: -25 }));
    await page.locator('#live[data-mode="push"]').waitFor();
    const before = seen.length;
    await page.waitForTimeout(validUntil + 1500 - Date.now());
    await page.getByText('The jobs API refused this sign-in link (Invalid or expired token)').waitFor();
    assert.deepEqual(seen.slice(before), ['watch'], 'the stream ended with the token; its reconnect was refused');
    assert.deepEqual(await aMinuteLater(page, seen), [], 'then nothing');
    await context.close();
  });
});

describe('security headers and the Content-Security-Policy', () => {
  test('every page response carries the headers of vercel.json', async () => {
    assert.deepEqual(PAGE_HEADERS.map(([name]) => name), ['Content-Security-Policy', 'Referrer-Policy', 'X-Content-Type-Options']);
    for (const path of ['/', '/index.html', '/app.css', '/js/app.js', '/js/api.js', '/js/chart.js', '/js/live.js', '/js/search.js', '/js/view.js', '/vendor/uplot/uPlot.iife.min.js', '/no-such-file.js']) {
      const response = await fetch(`${setup.jobs.base}${path}`);
      assert.deepEqual(securityHeaderProblems(response.headers), [], path);
    }
  });

  test('the page works under the policy: rows, detail, create, with 0 CSP and 0 axe violations', async () => {
    const secured = setup.jobs;
    const user = 'csp-user';
    const token = mintToken(SECRET, user);
    const created = await fetch(`${secured.base}/api/jobs?action=create`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ type: 'demo', payload: { steps: 4, stepMs: 0, failAttempts: 1 } }),
    });
    const { taskId } = await created.json();
    const context = await setup.browser.newContext();
    const csp = await watchCsp(context);
    const page = await context.newPage();
    const documents = [];
    page.on('response', (r) => {
      if (['document', 'script', 'stylesheet'].includes(r.request().resourceType())) documents.push(r);
    });
    await page.goto(`${secured.base}/#token=${token}`);
    await row(page, taskId).getByRole('button', { name: /^Retry task/ }).waitFor({ timeout: 20000 });
    await row(page, taskId).getByRole('button', { name: /^Retry task/ }).click();
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId, { timeout: 20000 });
    assert.equal(await row(page, taskId).locator('.progress > span').evaluate((e) => e.style.width), '100%', 'the progress bar is drawn');
    assert.ok((await row(page, taskId).locator('.progress > span').boundingBox()).width > 0);
    await row(page, taskId).getByRole('button', { name: /^Details of task/ }).click();
    await page.locator('#detail').getByText('Timeline').waitFor();
    await page.keyboard.press('Escape');
    const create = page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'create');
    await page.getByRole('button', { name: 'Create task' }).click();
    assert.equal((await create).status(), 201);

    assert.deepEqual((await axe(page)).violations, []);
    assert.deepEqual(csp, [], 'no Content-Security-Policy violation');
    assert.deepEqual(documents.map((r) => r.url().replace(secured.base, '')).sort(), ['/', '/app.css', '/js/api.js', '/js/app.js', '/js/chart.js', '/js/live.js', '/js/search.js', '/js/view.js', '/vendor/uplot/uPlot.iife.min.js', '/vendor/uplot/uPlot.min.css']);
    for (const response of documents) {
      assert.deepEqual(securityHeaderProblems(new Headers(await response.allHeaders())), [], response.url());
    }
    // The policy is enforced, and a violation would have been seen: a style attribute is refused.
    await page.evaluate(() => document.body.insertAdjacentHTML('beforeend', '<p style="color: red">x</p>'));
    await page.waitForTimeout(200);
    assert.ok(csp.some((v) => /style-src/.test(v)), `a style attribute is reported: ${csp.join(' | ')}`);
    await context.close();
  });

  test('create sends a fresh Idempotency-Key per click', async () => {
    const { context: signed, page: signedPage } = await openWithToken(mintToken(SECRET, 'idempotent-user'));
    const keys = [];
    signedPage.on('request', (r) => {
      if (new URL(r.url()).searchParams.get('action') === 'create') keys.push(r.headers()['idempotency-key']);
    });
    await signedPage.getByText('Signed in as idempotent-user').waitFor();
    for (let i = 0; i < 2; i++) {
      const done = signedPage.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'create');
      await signedPage.getByRole('button', { name: 'Create task' }).click();
      assert.equal((await done).status(), 201);
    }
    assert.equal(keys.length, 2);
    for (const key of keys) assert.match(key, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(keys[0], keys[1]);
    await signed.close();
  });
});
