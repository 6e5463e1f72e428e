// The Task Manager in headless Chromium under `vercel dev`, as e2e/vercel-dev.mjs reproduces it:
// the page from public/, and every API call a `jobs` process of its own (built by the Vercel CLI's
// Rust builder, sent SIGTERM once its response is closed), with `process` self-invoked back
// through the dev server. The plan's acceptance criteria for Retry, end to end.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  axe, launchBrowser, openPage, row, securityHeaderProblems, shot, slowDown, startService, watchCsp,
} from './harness.mjs';

let browser;
let dev;

before(async () => {
  browser = await launchBrowser();
  dev = await startService({}, { via: 'vercel-dev' });
});

after(async () => {
  await browser?.close();
  dev?.stop();
});

const statusIs = (page, taskId, statuses, timeout) => page.waitForFunction(
  ([id, wanted]) => wanted.includes(document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status),
  [taskId, statuses],
  { timeout },
);

test('the page comes from public/ through the dev server', async () => {
  const response = await fetch(`${dev.base}/`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/html/);
  const css = await fetch(`${dev.base}/app.css`);
  assert.match(css.headers.get('content-type'), /^text\/css/);
});

test('every page response carries vercel.json\'s security headers, and the page runs under its policy', async () => {
  for (const path of ['/', '/app.css', '/js/app.js', '/js/chart.js', '/js/live.js', '/js/search.js', '/js/view.js', '/vendor/uplot/uPlot.iife.min.js', '/no-such-file.js']) {
    assert.deepEqual(securityHeaderProblems((await fetch(`${dev.base}${path}`)).headers), [], path);
  }
  const user = 'vercel-dev-csp';
  const taskId = await dev.createDemo(user, { steps: 2, stepMs: 0, failAttempts: 1 });
  await dev.waitForStatus(user, taskId, 'failed', 60000);
  const context = await browser.newContext();
  const csp = await watchCsp(context);
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), user);
  const page = await context.newPage();
  const responses = [];
  page.on('response', (r) => {
    if (['document', 'script', 'stylesheet'].includes(r.request().resourceType())) responses.push(r);
  });
  await page.goto(`${dev.base}/`);
  await row(page, taskId).getByRole('button', { name: /^Retry task/ }).waitFor({ timeout: 30000 });
  const bar = row(page, taskId).locator('[role="progressbar"]');
  assert.equal(await bar.locator('span').evaluate((e) => e.style.width), `${await bar.getAttribute('aria-valuenow')}%`);
  await row(page, taskId).getByRole('button', { name: /^Details of task/ }).click();
  await page.locator('#detail').getByText('Timeline').waitFor({ timeout: 30000 });
  await page.keyboard.press('Escape');
  assert.deepEqual((await axe(page)).violations, []);
  assert.deepEqual(csp, [], 'no Content-Security-Policy violation');
  assert.equal(responses.length, 10, responses.map((r) => r.url()).join());
  for (const response of responses) {
    assert.deepEqual(securityHeaderProblems(new Headers(await response.allHeaders())), [], response.url());
  }
  await context.close();
});

test('a failed task shows Retry; clicking it shows Retrying..., re-queues the row and it completes', async () => {
  const user = 'vercel-dev-retry';
  const taskId = await dev.createDemo(user, { steps: 3, stepMs: 150, failAttempts: 1 });
  await dev.waitForStatus(user, taskId, 'failed', 60000);

  const page = await openPage(browser, dev, user);
  const button = row(page, taskId).getByRole('button', { name: /^Retry task/ });
  await button.waitFor({ timeout: 30000 });
  assert.equal(await row(page, taskId).locator('[data-error]').textContent(), 'Simulated failure on attempt 1');
  await shot(row(page, taskId), 'vercel-dev-1-failed-row');

  const requests = await slowDown(page, 'retry', 500);
  const response = page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'retry');
  await button.click();
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"] button[data-action="retry"]`)?.textContent === 'Retrying...', taskId);
  const busy = row(page, taskId).locator('button[data-action="retry"]');
  assert.equal(await busy.isDisabled(), true);
  assert.equal(await busy.getAttribute('aria-busy'), 'true');
  await shot(row(page, taskId), 'vercel-dev-2-retrying');

  assert.deepEqual(await (await response).json(), { success: true, taskId });
  assert.deepEqual(requests.map((r) => [r.method, JSON.parse(r.body)]), [['POST', { taskId, userId: user }]]);
  await statusIs(page, taskId, ['queued', 'processing'], 2000);
  assert.equal(await row(page, taskId).getByRole('button', { name: /Retry/ }).count(), 0);

  // Live refresh, each poll its own process: the work ran after its `process` was sent SIGTERM.
  await statusIs(page, taskId, ['completed'], 60000);
  assert.equal(await row(page, taskId).locator('[data-progress]').textContent(), '100%');
  assert.equal(await row(page, taskId).locator('[data-retries]').textContent(), '1 / 3');
  await shot(page, 'vercel-dev-3-completed');
  const task = await dev.task(user, taskId);
  assert.deepEqual([task.status, task.retryCount, task.attempts], ['completed', 1, 2]);
  await page.context().close();
});

test('a retry past the budget shows "Max retries (1) reached." in an error toast', async () => {
  const user = 'vercel-dev-budget';
  const taskId = await dev.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 2 }, { maxRetries: 1 });
  await dev.waitForStatus(user, taskId, 'failed', 60000);
  const retried = await dev.api('retry', { method: 'POST', body: { taskId, userId: user } });
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
  await dev.waitForStatus(user, taskId, 'failed', 60000);

  const page = await openPage(browser, dev, user);
  await row(page, taskId).getByRole('button', { name: /^Retry task/ }).click({ timeout: 30000 });
  await page.getByRole('alert').getByText('Max retries (1) reached.').waitFor();
  await shot(page, 'vercel-dev-4-max-retries-toast');
  await row(page, taskId).getByRole('button', { name: /^Retry task/ }).waitFor();
  const task = await dev.task(user, taskId);
  assert.deepEqual([task.status, task.retryCount, task.attempts], ['failed', 1, 2]);
  await page.context().close();
});
