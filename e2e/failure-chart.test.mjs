// "Failures over time" in headless Chromium: the chart drawn with the vendored uPlot from the
// API's `failures`, its numbers as a table for screen readers, checked by axe-core
// (docs/spec.md §22).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { axe, browserAndService, openPage, shot } from './harness.mjs';

const setup = browserAndService();

test('failures over time: a stacked chart by cause with retries and recoveries, and the same numbers as a table', async () => {
  const user = 'charted';
  const once = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await setup.jobs.waitForStatus(user, once, 'failed');
  // Retried and recovered.
  await setup.jobs.api('retry', { method: 'POST', body: { taskId: once, userId: user } });
  await setup.jobs.waitForStatus(user, once, 'completed');

  const api = await setup.jobs.api('failures', { query: { userId: user } });
  assert.equal(api.status, 200);
  assert.equal(api.body.hours.length, 24);
  const now = api.body.hours.at(-1);
  assert.equal(now.failures.reduce((a, b) => a + b, 0) + now.other, 2);
  assert.equal(now.retries, 1);
  assert.equal(now.recoveries, 1);
  assert.equal(api.body.groups[0].template, 'Simulated failure on attempt <n>');

  const page = await openPage(setup.browser, setup.jobs, user);
  const panel = page.locator('#chart-panel');
  await panel.waitFor();
  await page.locator('#chart canvas').waitFor();
  assert.equal(await page.locator('#chart').getAttribute('aria-hidden'), 'true', 'the canvas is not read out');
  assert.match(await page.locator('#chart .u-legend').textContent(), /Simulated failure on attempt <n>.*Retries.*Recoveries/s);
  await page.locator('#chart-data summary').click();
  const rows = page.locator('#chart-table tbody tr');
  assert.equal(await rows.count(), 24);
  const last = (await rows.last().locator('td').allTextContents()).map(Number);
  assert.deepEqual(last, [2, 0, 1, 1], 'failures of the cause, other, retries, recoveries');
  await shot(panel, 'chart-1-failures-over-time');
  const { violations } = await axe(page, { include: '#chart-panel' });
  assert.deepEqual(violations, [], JSON.stringify(violations, null, 1));
  await page.context().close();
});

test('no failures, no chart', async () => {
  const page = await openPage(setup.browser, setup.jobs, 'never-failed');
  await page.getByText('No tasks yet.').waitFor();
  await page.waitForTimeout(500);
  assert.equal(await page.locator('#chart-panel').isHidden(), true);
  await page.context().close();
});
