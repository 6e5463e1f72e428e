// Live updates in headless Chromium: the page reads the `watch` stream (docs/spec.md §18) and
// stops polling; when the stream cannot be used it polls `list` and says so.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { axe, browserAndService, openPage, row, shot } from './harness.mjs';

const setup = browserAndService();
const actionOf = (request) => new URL(request.url()).searchParams.get('action');

/** From now on every list is answered at once and its answer held `ms` on its way back: it shows what was true before the changes pushed meanwhile. */
const holdListAnswers = (page, ms) => page.route((url) => url.searchParams.get('action') === 'list', async (route) => {
  const response = await route.fetch();
  await new Promise((r) => setTimeout(r, ms));
  await route.fulfill({ response });
});

test('changes are pushed: a new task runs to completed on screen with no list request', async () => {
  const user = 'pushed';
  const page = await openPage(setup.browser, setup.jobs, user);
  const lists = [];
  page.on('request', (r) => { if (actionOf(r) === 'list') lists.push(Date.now()); });
  await page.locator('#live[data-mode="push"]').waitFor();
  assert.equal(await page.locator('#live').textContent(), 'Live: changes are pushed');
  // The sync that follows `ready` may still be on its way.
  await page.waitForTimeout(500);
  const before = lists.length;

  const taskId = await setup.jobs.createDemo(user, { steps: 5, stepMs: 200 });
  await row(page, taskId).waitFor();
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'processing', taskId);
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId);
  assert.equal(lists.length, before, 'no list request: every change arrived on the stream');
  await shot(page, 'live-1-pushed');
  const { violations } = await axe(page);
  assert.deepEqual(violations, [], JSON.stringify(violations, null, 1));
  await page.context().close();
});

test('a failure pushed to the page updates Failures by cause, and its retry runs to completed on screen', async () => {
  const user = 'pushed-failure';
  const page = await openPage(setup.browser, setup.jobs, user);
  await page.locator('#live[data-mode="push"]').waitFor();
  // Finishes within milliseconds of the retry: its changes can reach the page before the
  // retry's own answer does, which must not put the row back to `queued`.
  const taskId = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'failed', taskId);
  await page.locator('#groups:not([hidden])').waitFor();
  await row(page, taskId).getByRole('button', { name: /^Retry task/ }).click();
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId);
  await page.locator('#groups').waitFor({ state: 'hidden' });
  await page.waitForTimeout(1500);
  assert.equal(await row(page, taskId).getAttribute('data-status'), 'completed', 'it stays completed');
  await page.context().close();
});

test('a list answer older than a pushed change does not undo it', async () => {
  const user = 'late-list';
  const taskId = await setup.jobs.createDemo(user, { steps: 20, stepMs: 100 });
  const page = await openPage(setup.browser, setup.jobs, user);
  await page.locator('#live[data-mode="push"]').waitFor();
  await row(page, taskId).waitFor();
  await holdListAnswers(page, 3000);
  await page.getByRole('button', { name: 'Refresh' }).click();
  const late = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0 });
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', late);
  await page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'list');
  await page.waitForTimeout(300);
  assert.equal(await row(page, late).getAttribute('data-status'), 'completed', 'the pushed task stays, completed');
  await setup.jobs.api('cancel', { method: 'POST', body: { taskId, userId: user } });
  await page.context().close();
});

test('under a status filter, a late list does not bring back a row a push moved out of it', async () => {
  const user = 'late-list-filter';
  const failed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await setup.jobs.waitForStatus(user, failed, 'failed');
  const page = await openPage(setup.browser, setup.jobs, user);
  await page.locator('#live[data-mode="push"]').waitFor();
  await page.locator('#status-filter').selectOption('failed');
  await row(page, failed).waitFor();
  await holdListAnswers(page, 2500);
  await page.getByRole('button', { name: 'Refresh' }).click();
  // Retried while that list (which still holds it failed) is on its way back.
  await setup.jobs.api('retry', { method: 'POST', body: { taskId: failed, userId: user } });
  await row(page, failed).waitFor({ state: 'detached' });
  await page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'list');
  await page.waitForTimeout(300);
  assert.equal(await row(page, failed).count(), 0, 'the late list does not bring it back');
  await page.context().close();
});

test('a list that fails while changes are pushed is asked again', async () => {
  const user = 'failed-sync';
  const taskId = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0 });
  await setup.jobs.waitForStatus(user, taskId, 'completed');
  let failures = 0;
  const context = await setup.browser.newContext();
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), user);
  // The first two lists (the page's first, and the one after `ready`) meet a database outage.
  await context.route((url) => url.searchParams.get('action') === 'list', async (route) => {
    if (failures < 2) {
      failures += 1;
      return route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: 'Database unavailable', code: 'DB_UNAVAILABLE' }) });
    }
    return route.continue();
  });
  const page = await context.newPage();
  await page.goto(`${setup.jobs.base}/`);
  await page.locator('#live[data-mode="push"]').waitFor();
  await row(page, taskId).waitFor({ timeout: 10000 });
  assert.equal(failures, 2);
  await context.close();
});

// When the stream cannot be used the page polls, says so, and still shows changes.
const withoutStream = [
  {
    name: 'the API answers 503 WATCH_UNAVAILABLE (a database without change streams)',
    route: (route) => route.fulfill({
      status: 503,
      contentType: 'application/json',
      body: JSON.stringify({ error: 'Live updates are unavailable here (no change streams); poll list instead.', code: 'WATCH_UNAVAILABLE' }),
    }),
    reason: /Live updates are unavailable here/,
  },
  {
    // A proxy that buffers the stream: no `ready` arrives within 5 s.
    name: 'a proxy buffers the stream',
    route: () => {},
    reason: /buffered/,
  },
];

for (const { name, route, reason } of withoutStream) {
  test(`falls back to polling when ${name}`, async () => {
    const user = `fallback-${name.length}`;
    const context = await setup.browser.newContext();
    await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), user);
    await context.route((url) => url.searchParams.get('action') === 'watch', route);
    const page = await context.newPage();
    await page.goto(`${setup.jobs.base}/`);
    await page.locator('#live[data-mode="poll"]').waitFor({ timeout: 10000 });
    assert.match(await page.locator('#live').textContent(), /^Polling every \d+ s$/);
    assert.match(await page.locator('#live').getAttribute('title'), reason);

    const taskId = await setup.jobs.createDemo(user, { steps: 3, stepMs: 200 });
    // The idle interval is 10 s; the page asks at once after a refresh click.
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId, { timeout: 15000 });
    await context.close();
  });
}
