// The Task Manager page in headless Chromium against the real jobs binary and SecantusDB:
// the plan's seven acceptance criteria, live refresh, cancel, and concurrent retries.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { POLLING, browserAndService, mintToken, openPage, row, shot, slowDown, startService } from './harness.mjs';

const setup = browserAndService();

const FAILS_ONCE = { steps: 3, stepMs: 150, failAttempts: 1 };

describe('retry, the plan\'s acceptance criteria', () => {
  test('1. the Retry button is shown only for failed tasks', async () => {
    const user = 'criteria-1';
    const failed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
    const completed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0 });
    const running = await setup.jobs.createDemo(user, { steps: 100, stepMs: 200 });
    await setup.jobs.waitForStatus(user, failed, 'failed');
    await setup.jobs.waitForStatus(user, completed, 'completed');

    const page = await openPage(setup.browser, setup.jobs, user);
    await row(page, failed).getByRole('button', { name: /^Retry task/ }).waitFor();
    assert.equal(await row(page, completed).getByRole('button', { name: /Retry/ }).count(), 0);
    assert.equal(await row(page, running).getByRole('button', { name: /Retry/ }).count(), 0);
    assert.equal(await row(page, running).getByRole('button', { name: /^Cancel task/ }).count(), 1);
    assert.equal(await row(page, failed).locator('[data-error]').textContent(), 'Simulated failure on attempt 1');
    await shot(row(page, failed), '1-failed-row');
    await setup.jobs.api('cancel', { method: 'POST', body: { taskId: running, userId: user } });
    await page.context().close();
  });

  test('2-6. Retry disables the button, shows Retrying..., posts {taskId, userId}, and the row re-queues at once, then completes live', async () => {
    const user = 'criteria-2';
    // Polling: the row shows `queued` from the retry's own answer, before any refresh (pushed
    // changes would show the task's next states at once; the live tests cover them).
    const page = await openPage(setup.browser, setup.jobs, user, undefined, POLLING);
    // Created through the page's own form.
    await page.getByLabel('Steps').fill(String(FAILS_ONCE.steps));
    await page.getByLabel('Step (ms)').fill(String(FAILS_ONCE.stepMs));
    await page.getByLabel('Failing attempts').fill('1');
    await page.getByRole('button', { name: 'Create task' }).click();
    const created = page.locator('tr[data-task-id]').first();
    await created.waitFor();
    const taskId = await created.getAttribute('data-task-id');
    const button = row(page, taskId).getByRole('button', { name: /Retry task/ });
    await button.waitFor({ timeout: 15000 });

    const requests = await slowDown(page, 'retry', 800);
    const response = page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'retry');
    await button.focus();
    await page.keyboard.press('Enter'); // keyboard works
    const busy = row(page, taskId).locator('button[data-action="retry"]');
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"] button[data-action="retry"]`)?.textContent === 'Retrying...', taskId);
    assert.equal(await busy.isDisabled(), true);
    assert.equal(await busy.getAttribute('aria-busy'), 'true');
    await shot(row(page, taskId), '2-retrying');

    assert.equal((await (await response).json()).success, true);
    assert.deepEqual(requests.map((r) => [r.method, JSON.parse(r.body)]), [['POST', { taskId, userId: user }]]);
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'queued', taskId, { timeout: 500 });
    const requeued = row(page, taskId);
    assert.equal(await requeued.locator('[data-status]').textContent(), 'queued');
    assert.equal(await requeued.locator('[data-progress]').textContent(), '0%');
    assert.equal(await requeued.locator('[data-error]').textContent(), '');
    assert.equal(await requeued.locator('[data-retries]').textContent(), '1 / 3');
    assert.equal(await requeued.getByRole('button', { name: /Retry/ }).count(), 0);
    await shot(requeued, '3-requeued-row');

    // Live refresh, no reload: processing, then completed.
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId, { timeout: 20000 });
    assert.equal(await requeued.locator('[data-progress]').textContent(), '100%');
    await requeued.getByText('Error history (1)').click();
    assert.match(await requeued.locator('details ol').textContent(), /Attempt 1 .*Simulated failure on attempt 1/);
    await page.context().close();
  });

  test('7. a refused retry shows the server\'s message in an error toast', async () => {
    const user = 'criteria-7';
    const taskId = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 }, { maxRetries: 0 });
    await setup.jobs.waitForStatus(user, taskId, 'failed');
    const page = await openPage(setup.browser, setup.jobs, user);
    await row(page, taskId).getByRole('button', { name: /Retry task/ }).click();
    const toast = page.getByRole('alert');
    await toast.getByText('Max retries (0) reached.').waitFor();
    await shot(page, '4-max-retries-toast');
    await row(page, taskId).getByRole('button', { name: /^Retry task/ }).waitFor();
    assert.equal((await setup.jobs.task(user, taskId)).status, 'failed');
    await page.context().close();
  });
});

test('one task retrying never disables another task\'s button', async () => {
  const user = 'two-failures';
  const first = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  const second = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await setup.jobs.waitForStatus(user, first, 'failed');
  await setup.jobs.waitForStatus(user, second, 'failed');
  const page = await openPage(setup.browser, setup.jobs, user);
  await row(page, second).getByRole('button', { name: /Retry task/ }).waitFor();

  await slowDown(page, 'retry', 1000);
  await row(page, first).getByRole('button', { name: /Retry task/ }).click();
  await row(page, first).getByRole('button', { name: /Retrying task/ }).waitFor();
  const other = row(page, second).getByRole('button', { name: /^Retry task/ });
  assert.equal(await other.isEnabled(), true);
  assert.equal(await other.textContent(), 'Retry');

  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', first, { timeout: 20000 });
  assert.equal(await row(page, second).getAttribute('data-status'), 'failed');
  assert.equal((await setup.jobs.task(user, second)).retryCount, 0);
  await page.context().close();
});

test('cancel stops a running task', async () => {
  const user = 'canceller';
  const taskId = await setup.jobs.createDemo(user, { steps: 100, stepMs: 200 });
  const page = await openPage(setup.browser, setup.jobs, user);
  await row(page, taskId).getByRole('button', { name: /Cancel task/ }).click();
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'cancelled', taskId);
  assert.equal((await setup.jobs.task(user, taskId)).status, 'cancelled');
  assert.equal(await row(page, taskId).getByRole('button').filter({ hasText: /Retry|Cancel/ }).count(), 0);
  await page.context().close();
});

test('the status filter and the empty state', async () => {
  const user = 'filterer';
  const failed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  const completed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0 });
  await setup.jobs.waitForStatus(user, failed, 'failed');
  await setup.jobs.waitForStatus(user, completed, 'completed');
  const page = await openPage(setup.browser, setup.jobs, user);
  await row(page, completed).waitFor();
  await page.getByLabel('Status').selectOption('failed');
  await row(page, completed).waitFor({ state: 'detached' });
  assert.equal(await row(page, failed).count(), 1);
  await page.getByLabel('Status').selectOption('cancelled');
  await page.getByText('No cancelled tasks.').waitFor();
  await page.context().close();
});

test('usable at 375 px wide', async () => {
  const user = 'phone';
  const taskId = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  await setup.jobs.waitForStatus(user, taskId, 'failed');
  const page = await openPage(setup.browser, setup.jobs, user, { width: 375, height: 812 });
  const retry = row(page, taskId).getByRole('button', { name: /Retry task/ });
  await retry.waitFor();
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 375), 'no horizontal scrolling');
  const box = await retry.boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 375, 'the Retry button is on screen');
  await shot(page, '5-375px', { fullPage: true });
  await retry.click();
  await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status !== 'failed', taskId);
  await page.context().close();
});

test('a database outage is a visible message, not a blank page', async () => {
  const down = await startService({ MONGODB_URI: 'mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300' });
  try {
    const page = await openPage(setup.browser, down, 'nobody');
    await page.getByText('The task database is unavailable').waitFor();
    await shot(page, '6-database-down');
    await page.context().close();
  } finally {
    down.stop();
  }
});

test('live refresh pauses while the tab is hidden and resumes when it is shown', async () => {
  const user = 'hidden-tab';
  const taskId = await setup.jobs.createDemo(user, { steps: 100, stepMs: 100 });
  const page = await openPage(setup.browser, setup.jobs, user, undefined, POLLING);
  await row(page, taskId).waitFor();
  const lists = [];
  page.on('request', (r) => { if (new URL(r.url()).searchParams.get('action') === 'list') lists.push(Date.now()); });
  const setHidden = (hidden) => page.evaluate((value) => {
    Object.defineProperty(document, 'hidden', { value, configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);

  // Live refresh is every second; on a loaded machine a list may take longer to answer, so
  // wait (up to 6 s) for two rather than count what came in a fixed window.
  for (const started = Date.now(); lists.length < 2 && Date.now() - started < 6000;) await page.waitForTimeout(100);
  assert.ok(lists.length >= 2, `refreshes live while a task is processing (${lists.length} in 6 s)`);
  await setHidden(true);
  const whenHidden = lists.length;
  await page.waitForTimeout(2500);
  assert.ok(lists.length - whenHidden <= 1, `paused while hidden (${lists.length - whenHidden} requests)`);
  await setHidden(false);
  await page.waitForTimeout(1500);
  assert.ok(lists.length - whenHidden >= 2, 'resumes when shown');
  await setup.jobs.api('cancel', { method: 'POST', body: { taskId, userId: user } });
  await page.context().close();
});

test('a live refresh costs one list read: 304 keeps the rows as they are, and groups are asked for after a retry and on the idle interval only', async () => {
  const user = 'cheap-refresh';
  const failed = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 });
  // Scheduled for a minute (nothing hands it off in this test): keeps the page live, changes nothing.
  const scheduled = await setup.jobs.createDemo(user, { steps: 1, stepMs: 0, failAttempts: 1 },
    { autoRetry: { attempts: 1, delaySeconds: 60, backoff: 'fixed' } });
  await setup.jobs.waitForStatus(user, failed, 'failed');
  await setup.jobs.waitForStatus(user, scheduled, 'scheduled');

  const context = await setup.browser.newContext();
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), user);
  const page = await context.newPage();
  const actionOf = (r) => new URL(r.url()).searchParams.get('action');
  const sent = [];
  const lists = [];
  page.on('request', (r) => sent.push({ action: actionOf(r), at: Date.now(), ifNoneMatch: r.headers()['if-none-match'] }));
  page.on('response', (r) => { if (actionOf(r) === 'list') lists.push({ status: r.status(), etag: r.headers().etag }); });
  const count = (action, since = 0) => sent.filter((s) => s.action === action && s.at >= since).length;
  await page.goto(`${setup.jobs.base}/${POLLING}`);
  const box = row(page, failed).getByRole('checkbox', { name: `Select task ${failed}` });
  await box.check();
  await box.focus();
  assert.equal(count('groups'), 1, 'groups once when the page opens');

  const quiet = Date.now();
  await page.waitForTimeout(3500);
  assert.ok(count('list', quiet) >= 2, `live refresh goes on (${count('list', quiet)} lists in 3.5 s)`);
  assert.equal(count('groups', quiet), 0, 'no groups on live refreshes');
  assert.equal(lists[0].status, 200);
  assert.ok(lists[0].etag, 'the list answers an ETag');
  assert.ok(lists.length >= 3 && lists.slice(1).every((l) => l.status === 304), JSON.stringify(lists));
  assert.ok(sent.filter((s) => s.action === 'list').slice(1).every((s) => s.ifNoneMatch === lists[0].etag), 'each refresh sends the tag back');
  assert.equal(await box.isChecked(), true, 'the checkbox stays checked');
  assert.equal(await box.evaluate((el) => el === document.activeElement), true, 'focus stays on it');
  assert.equal(await page.locator('#state').isHidden(), true, 'a 304 shows no error');
  assert.equal(await page.locator('#groups').isHidden(), false, 'the failure shows in Failures by cause');

  await row(page, failed).getByRole('button', { name: /^Retry task/ }).click();
  const retried = Date.now();
  await page.waitForFunction(() => document.querySelector('#groups').hidden, null, { timeout: 3000 });
  const afterRetry = sent.filter((s) => s.action === 'groups' && s.at >= retried);
  assert.equal(afterRetry.length, 1, 'groups asked for once after the retry');
  const asked = sent.filter((s) => s.action === 'groups').map((s) => s.at);
  assert.ok(asked.at(-1) - asked.at(-2) < 9000, 'after the retry, not on the idle interval');
  assert.ok(lists.some((l, i) => i > 0 && l.status === 200), 'the retry changed the list: a full answer');

  // Then, with nothing changing, on the idle interval (10 s) only.
  const since = asked.at(-1);
  await page.waitForTimeout(since + 9000 - Date.now());
  assert.equal(count('groups', since + 1), 0, 'no groups for 9 s');
  await page.waitForTimeout(since + 12500 - Date.now());
  assert.equal(count('groups', since + 1), 1, 'groups on the idle interval');
  await setup.jobs.api('cancel', { method: 'POST', body: { taskId: scheduled, userId: user } });
  await context.close();
});

test('with JOBS_AUTH_SECRET the page uses the token the host hands over', async () => {
  const secret = 'e2e-auth-secret';
  const secured = await startService({ JOBS_AUTH_SECRET: secret });
  try {
    const token = mintToken(secret, 'token-user');
    const created = await fetch(`${secured.base}/api/jobs?action=create`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ type: 'demo', payload: { steps: 1, stepMs: 0, failAttempts: 1 } }),
    });
    const { taskId } = await created.json();
    const context = await setup.browser.newContext();
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => requests.push(r));
    await page.goto(`${secured.base}/#token=${token}`);
    await page.getByText('Signed in as token-user').waitFor();
    assert.equal(new URL(page.url()).hash, '', 'the token is removed from the address bar');
    await row(page, taskId).getByRole('button', { name: /Retry task/ }).click();
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId, { timeout: 20000 });
    const retry = requests.find((r) => new URL(r.url()).searchParams.get('action') === 'retry');
    assert.equal(retry.headers().authorization, `Bearer ${token}`);
    // With a token the page claims no user: the server takes it from `sub`.
    assert.deepEqual(JSON.parse(retry.postData()), { taskId });
    await context.close();
  } finally {
    secured.stop();
  }
});

test('a token for a non-ASCII user (jürgen) lists and retries his task, and no request carries a userId', async () => {
  const secret = 'e2e-auth-secret-utf8';
  const secured = await startService({ JOBS_AUTH_SECRET: secret });
  try {
    const token = mintToken(secret, 'jürgen');
    const created = await fetch(`${secured.base}/api/jobs?action=create`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ type: 'demo', payload: { steps: 1, stepMs: 0, failAttempts: 1 } }),
    });
    assert.equal(created.status, 201);
    const { taskId } = await created.json();
    const context = await setup.browser.newContext();
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => { if (new URL(r.url()).pathname === '/api/jobs') requests.push(r); });
    const retried = page.waitForResponse((r) => new URL(r.url()).searchParams.get('action') === 'retry');
    await page.goto(`${secured.base}/#token=${token}`);
    await page.getByText('Signed in as jürgen', { exact: true }).waitFor();
    await row(page, taskId).getByRole('button', { name: /Retry task/ }).click();
    assert.equal((await retried).status(), 200, 'the retry is accepted for jürgen');
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === 'completed', taskId, { timeout: 20000 });

    const actions = requests.map((r) => new URL(r.url()).searchParams.get('action'));
    assert.ok(actions.includes('list') && actions.includes('retry'), actions.join());
    for (const request of requests) {
      const url = new URL(request.url());
      assert.equal(url.searchParams.get('userId'), null, `no userId in ${url.search}`);
      const body = request.postData();
      if (body) assert.ok(!('userId' in JSON.parse(body)), `no userId in ${body}`);
      assert.equal(request.headers().authorization, `Bearer ${token}`);
    }
    await context.close();
  } finally {
    secured.stop();
  }
});

test('the create form states the work limit and shows the server\'s refusal above it', async () => {
  const page = await openPage(setup.browser, setup.jobs, `work-limit-${Date.now()}`);
  const hint = page.locator('#work-limit');
  await hint.getByText(/at most 240 s of work by default/).waitFor();
  const form = page.locator('#create');
  await form.getByLabel('Steps').fill('100');
  await form.getByLabel('Step (ms)').fill('5000');
  await page.locator('#work-total').getByText('500 s').waitFor();
  await form.getByRole('button', { name: 'Create task' }).click();
  await page.locator('#toasts .toast.error')
    .getByText('Invalid payload: steps * stepMs is 500000 ms, above the work budget of 240 s (JOBS_WORK_BUDGET_SECONDS)')
    .waitFor();
  await page.context().close();
});
