// Retry at scale on the Task Manager page, in headless Chromium against the real jobs binary and
// SecantusDB (docs/spec.md §12-§15): the scheduled badge with its countdown and `auto n/m`, the
// form's automatic retries, "Retry selected (n)", "Failures by cause" with "Retry all (n)" paged
// through nextCursor, the confirmation dialog, the summary toast, and a task's detail with its
// timeline and its steps ("Retry from step 4", "Restart from the beginning"). axe-core (WCAG 2 A and AA) runs on each of these views: no serious or critical
// violation. Screenshots go to target/e2e-screenshots/scale-*.png.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { axe, browserAndService, mintToken, openPage, POLLING, row, shot, slowDown, startService } from './harness.mjs';
import { countdown, retrySummary } from '../public/js/view.js';

const setup = browserAndService();

const FAILS_ONCE = { steps: 1, stepMs: 0, failAttempts: 1 };
const statusOf = (page, taskId) => row(page, taskId).getAttribute('data-status');
const waitStatus = (page, taskId, status, timeout = 20000) => page.waitForFunction(
  ([id, want]) => document.querySelector(`tr[data-task-id="${id}"]`)?.dataset.status === want, [taskId, status], { timeout },
);
const isAction = (name) => (r) => new URL(r.url()).searchParams.get('action') === name;

/** Opens the page and records every uncaught error and failed script on it. */
async function open(user, viewport, search) {
  const page = await openPage(setup.browser, setup.jobs, user, viewport, search);
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(String(error)));
  return page;
}

/** axe-core on the page as it is now; every violation is reported, serious and critical fail. */
async function accessible(t, page, view) {
  const { violations, blocking } = await axe(page);
  t.diagnostic(`axe (${view}): ${violations.length ? violations.map((v) => `${v.id} [${v.impact}] ${v.targets.join(', ')}`).join('; ') : 'no violations'}`);
  assert.deepEqual(blocking, [], `${view}: serious or critical axe violations`);
}

/** Creates `n` demo tasks for `user` with a few requests in flight; their ids, oldest first. */
async function createMany(user, n, payload, extra = () => ({})) {
  const ids = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < n) {
      const i = next++;
      ids[i] = await setup.jobs.createDemo(user, payload, extra(i));
    }
  }));
  return ids;
}

async function failedGroups(user) {
  const reply = await setup.jobs.api('groups', { query: { status: 'failed', userId: user } });
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return reply.body.groups;
}

async function waitForGroupCount(user, count, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const groups = await failedGroups(user);
    if (groups.length === 1 && groups[0].count === count) return groups[0];
    if (Date.now() > deadline) throw new Error(`never ${count} failures in one group: ${JSON.stringify(groups)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('the summary toast reads as the issue writes it', () => {
  const skip = (code, n) => Array.from({ length: n }, (_, i) => ({ taskId: `${code}-${i}`, code }));
  assert.equal(retrySummary(37, []), 'Retried 37');
  assert.equal(retrySummary(37, skip('MAX_RETRIES', 3)), 'Retried 37, skipped 3: max retries reached');
  assert.equal(retrySummary(35, [...skip('NOT_FAILED', 2), ...skip('MAX_RETRIES', 3)]),
    'Retried 35, skipped 5: 3 max retries reached, 2 no longer failed');
  assert.equal(retrySummary(0, [...skip('TASK_NOT_FOUND', 1), ...skip('REQUEUE_FAILED', 1)]),
    'Retried 0, skipped 2: 1 not found, 1 could not be queued');
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(countdown('2026-01-01T00:00:07Z', now), 'in 7 s');
  assert.equal(countdown('2026-01-01T00:02:05Z', now), 'in 2 min 5 s');
  assert.equal(countdown('2025-12-31T23:59:59Z', now), 'due now');
});

test('a task with automatic retries, created from the form, shows scheduled with a live countdown and auto 1/2', async (t) => {
  const user = 'scale-scheduled';
  const failed = await setup.jobs.createDemo(user, FAILS_ONCE);
  await setup.jobs.waitForStatus(user, failed, 'failed');
  // Polling: the test counts the live refresh's list requests.
  const page = await open(user, undefined, POLLING);
  await row(page, failed).waitFor();

  const form = page.locator('#create');
  await form.getByLabel('Steps').fill('1');
  await form.getByLabel('Step (ms)').fill('0');
  await form.getByLabel('Failing attempts').fill('2');
  await form.getByLabel('Automatic retries').fill('2');
  await form.getByLabel('Retry delay (s)').fill('5');
  await form.getByLabel('Backoff').selectOption('fixed');
  const created = page.waitForRequest(isAction('create'));
  await form.getByRole('button', { name: 'Create task' }).click();
  assert.deepEqual(JSON.parse((await created).postData()), {
    type: 'demo',
    payload: { steps: 1, stepMs: 0, failAttempts: 2 },
    autoRetry: { attempts: 2, delaySeconds: 5, backoff: 'fixed' },
    userId: user,
  });

  const newest = page.locator('tr[data-task-id]').first();
  await page.waitForFunction(() => document.querySelector('tr[data-task-id]')?.dataset.status === 'scheduled', null, { timeout: 15000 });
  const taskId = await newest.getAttribute('data-task-id');
  assert.notEqual(taskId, failed);
  const badge = row(page, taskId).locator('[data-status]');
  const first = await badge.textContent();
  assert.match(first, /^scheduled · in [1-6] s$/);
  assert.equal(await row(page, taskId).locator('[data-auto]').textContent(), 'auto 1/2');
  assert.equal(await row(page, taskId).getByRole('button', { name: /^Cancel task/ }).count(), 1, 'a scheduled task can be cancelled');
  assert.equal(await row(page, taskId).getByRole('checkbox').count(), 0, 'only failed rows have a checkbox');
  assert.equal(await row(page, failed).getByRole('checkbox', { name: `Select task ${failed}` }).count(), 1);
  await shot(row(page, taskId), 'scale-1-scheduled-row');
  await shot(page, 'scale-2-list-scheduled', { fullPage: true });

  // The countdown moves every second, between list refreshes too.
  await page.waitForFunction(([id, before]) => {
    const text = document.querySelector(`tr[data-task-id="${id}"] [data-status]`)?.textContent ?? '';
    return text !== before && text.startsWith('scheduled');
  }, [taskId, first], { timeout: 2500 });
  const later = await badge.textContent();
  const seconds = (text) => Number(text.match(/in (\d+) s/)?.[1] ?? 0);
  assert.ok(seconds(later) < seconds(first), `${first} then ${later}`);

  // Live refresh treats scheduled like queued: a list request every second.
  const lists = [];
  page.on('request', (r) => { if (isAction('list')(r)) lists.push(Date.now()); });
  await page.waitForTimeout(2200);
  assert.ok(lists.length >= 2, `${lists.length} list requests in 2.2 s`);

  await accessible(t, page, 'the list with a scheduled row and checkboxes');
  const task = await setup.jobs.task(user, taskId);
  assert.deepEqual(task.autoRetry && { attempts: task.autoRetry.attempts, delaySeconds: task.autoRetry.delaySeconds, backoff: task.autoRetry.backoff },
    { attempts: 2, delaySeconds: 5, backoff: 'fixed' });

  // Self-invocation cannot wait: in development the local launcher's ticker hands off due
  // scheduled tasks through sweep (docs/spec.md §12). The test plays that ticker; the page,
  // without a reload, follows the second automatic retry and the completion.
  const ticker = setInterval(() => { setup.jobs.api('sweep').catch(() => {}); }, 1000);
  try {
    await page.waitForFunction((id) => document.querySelector(`tr[data-task-id="${id}"] [data-auto]`)?.textContent === 'auto 2/2', taskId, { timeout: 15000 });
    await waitStatus(page, taskId, 'completed', 20000);
  } finally {
    clearInterval(ticker);
  }
  assert.equal(await badge.textContent(), 'completed', 'no countdown once it ran');
  assert.equal(await row(page, taskId).locator('[data-auto]').textContent(), 'auto 2/2');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a confirmation closed and opened again at once still answers for the second opening', async () => {
  const user = 'scale-reopen';
  const [a] = await createMany(user, 1, FAILS_ONCE);
  await setup.jobs.waitForStatus(user, a, 'failed');
  const page = await open(user);
  await row(page, a).getByRole('checkbox').check();
  const bodies = [];
  page.on('request', (r) => { if (isAction('retryMany')(r)) bodies.push(JSON.parse(r.postData())); });
  await page.getByRole('button', { name: 'Retry selected (1)' }).click();
  const dialog = page.getByRole('dialog', { name: 'Retry 1 failed task?' });
  await dialog.waitFor();
  // Closed, then opened again before the browser dispatched the first `close` event (it is
  // queued): that event belongs to the first opening, not to the second.
  await page.evaluate(() => {
    document.querySelector('#confirm').close();
    document.querySelector('#retry-selected').click();
  });
  await dialog.waitFor();
  await page.waitForTimeout(100); // the first `close` event is dispatched meanwhile
  assert.equal(await dialog.isVisible(), true);
  const answered = page.waitForResponse(isAction('retryMany'));
  await page.locator('#confirm-ok').click();
  assert.deepEqual((await (await answered).json()).retried, [a]);
  assert.deepEqual(bodies, [{ taskIds: [a], userId: user }], 'one retry, for the second opening only');
  await page.context().close();
});

test('Retry selected (2): two checked failed rows, a confirmation that says 2, then the toast Retried 2', async (t) => {
  const user = 'scale-selected';
  const [a, b, c] = await createMany(user, 3, FAILS_ONCE);
  for (const id of [a, b, c]) await setup.jobs.waitForStatus(user, id, 'failed');
  const page = await open(user);
  const button = page.getByRole('button', { name: /^Retry selected/ });
  await row(page, c).waitFor();
  assert.equal(await button.textContent(), 'Retry selected (0)');
  assert.equal(await button.isDisabled(), true, 'disabled with nothing selected');

  const selectAll = page.getByLabel('Select all failed');
  await selectAll.check();
  assert.equal(await button.textContent(), 'Retry selected (3)');
  assert.equal(await row(page, c).getByRole('checkbox').isChecked(), true);
  await selectAll.uncheck();
  assert.equal(await button.textContent(), 'Retry selected (0)');

  await row(page, a).getByRole('checkbox').check();
  await row(page, b).getByRole('checkbox').check();
  assert.equal(await button.textContent(), 'Retry selected (2)');
  assert.equal(await selectAll.evaluate((box) => box.indeterminate), true);
  await page.waitForTimeout(1200); // a live refresh keeps the boxes checked
  assert.equal(await row(page, a).getByRole('checkbox').isChecked(), true);
  await shot(page.locator('#tasks').locator('..'), 'scale-3-selected');

  const bodies = [];
  page.on('request', (r) => { if (isAction('retryMany')(r)) bodies.push(JSON.parse(r.postData())); });

  // Escape cancels: nothing is sent.
  await button.click();
  const dialog = page.getByRole('dialog', { name: 'Retry 2 failed tasks?' });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'confirm-ok', 'focus on the confirm button');
  assert.equal(await page.locator('#confirm-ok').textContent(), 'Retry 2');
  await accessible(t, page, 'the confirmation dialog');
  await shot(page, 'scale-4-confirm-selected');
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.deepEqual(bodies, []);
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'retry-selected', 'focus back on the button');

  // Enter confirms.
  const answered = page.waitForResponse(isAction('retryMany'));
  await page.keyboard.press('Enter');
  await dialog.waitFor();
  await page.keyboard.press('Enter');
  const reply = await (await answered).json();
  assert.equal(bodies.length, 1);
  assert.deepEqual({ ...bodies[0], taskIds: [...bodies[0].taskIds].sort() }, { taskIds: [a, b].sort(), userId: user });
  assert.deepEqual([...reply.retried].sort(), [a, b].sort());
  assert.deepEqual(reply.skipped, []);
  const toast = page.locator('#toasts .toast').getByText('Retried 2', { exact: true });
  await toast.waitFor();
  await shot(page, 'scale-5-toast-selected');

  await waitStatus(page, a, 'completed');
  await waitStatus(page, b, 'completed');
  assert.equal(await statusOf(page, c), 'failed');
  assert.equal(await button.textContent(), 'Retry selected (0)');
  assert.equal((await setup.jobs.task(user, a)).retryCount, 1);
  assert.equal((await setup.jobs.task(user, c)).retryCount, 0);
  const events = (await setup.jobs.task(user, a)).events;
  assert.ok(events.some((e) => e.kind === 'retried' && e.by === `bulk:${user}`), JSON.stringify(events));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('Failures by cause: Retry all (103) pages through nextCursor with visible progress, and one task at max retries is skipped', async (t) => {
  const user = 'scale-group';
  const total = 103; // more than one page of 100
  const started = Date.now();
  const ids = await createMany(user, total, FAILS_ONCE, (i) => (i === 0 ? { maxRetries: 0 } : {}));
  const group = await waitForGroupCount(user, total);
  t.diagnostic(`${total} failed tasks in ${Date.now() - started} ms`);
  assert.equal(group.template, 'Simulated failure on attempt <n>');
  assert.match(group.errorGroup, /^[0-9a-f]{12}$/);

  const page = await open(user);
  const panel = page.getByRole('region', { name: 'Failures by cause' });
  const groupRow = page.locator(`#groups tr[data-error-group="${group.errorGroup}"]`);
  await groupRow.waitFor();
  assert.equal(await groupRow.locator('[data-template]').textContent(), 'Simulated failure on attempt <n>');
  assert.equal(await groupRow.locator('[data-count]').textContent(), String(total));
  assert.ok((await groupRow.locator('time').getAttribute('datetime')).length > 0, 'last seen');
  const retryAll = groupRow.getByRole('button', { name: /^Retry all \(103\)/ });
  assert.equal(await retryAll.textContent(), 'Retry all (103)');
  await accessible(t, page, 'the failures-by-cause panel');
  await shot(panel, 'scale-6-groups');

  const bodies = [];
  const replies = [];
  page.on('request', (r) => { if (isAction('retryMany')(r)) bodies.push(JSON.parse(r.postData())); });
  page.on('response', async (r) => { if (isAction('retryMany')(r)) replies.push(await r.json()); });
  await slowDown(page, 'retryMany', 700);

  await retryAll.click();
  const dialog = page.getByRole('dialog', { name: 'Retry 103 failed tasks?' });
  await dialog.waitFor();
  assert.match(await page.locator('#confirm-text').textContent(), /Simulated failure on attempt <n>/);
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'confirm-ok');
  await shot(page, 'scale-7-confirm-group');
  await page.locator('#confirm-ok').click();

  // Progress between the pages: the first 100 done, the rest on their way.
  await page.locator('#groups-status').getByText('Retrying… 100 of 103').waitFor({ timeout: 15000 });
  assert.equal(await groupRow.getByRole('button', { name: /^Retrying…/ }).getAttribute('aria-busy'), 'true');
  await shot(panel, 'scale-8-progress');
  const toast = page.locator('#toasts .toast').getByText('Retried 102, skipped 1: max retries reached', { exact: true });
  await toast.waitFor({ timeout: 15000 });
  await shot(page, 'scale-9-toast-group');

  assert.equal(bodies.length, 2, JSON.stringify(bodies));
  assert.deepEqual(bodies[0], { filter: { errorGroup: group.errorGroup }, limit: 100, userId: user });
  assert.ok(replies[0].nextCursor, 'the first page says more remain');
  assert.deepEqual(bodies[1], { filter: { errorGroup: group.errorGroup }, cursor: replies[0].nextCursor, limit: 100, userId: user });
  assert.equal(replies[1].nextCursor, null);
  assert.deepEqual(replies.flatMap((r) => r.skipped), [{ taskId: ids[0], code: 'MAX_RETRIES' }]);
  assert.equal(replies.flatMap((r) => r.retried).length, total - 1);

  // The panel refreshes with the list: the skipped task is the cause's only failure left.
  await groupRow.getByRole('button', { name: /^Retry all \(1\)/ }).waitFor({ timeout: 30000 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a task\'s detail: opened from its row by keyboard, its timeline with who did what, Escape closes and focus returns', async (t) => {
  const user = 'scale-detail';
  const taskId = await setup.jobs.createDemo(user, FAILS_ONCE);
  await setup.jobs.waitForStatus(user, taskId, 'failed');
  const page = await open(user);
  await page.getByRole('region', { name: 'Failures by cause' }).waitFor();
  await row(page, taskId).getByRole('button', { name: /^Retry task/ }).click();
  await waitStatus(page, taskId, 'completed');
  // Hidden when there are no failures.
  await page.waitForFunction(() => document.querySelector('#groups').hidden);

  const opener = row(page, taskId).getByRole('button', { name: `Details of task ${taskId}` });
  await opener.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: `demo task …${taskId.slice(-8)}` });
  await dialog.waitFor();
  await dialog.locator('tr[data-kind="completed"]').waitFor();

  const { events } = await setup.jobs.task(user, taskId);
  const shown = await dialog.locator('.timeline tbody tr').evaluateAll((rows) => rows.map((r) => ({
    kind: r.querySelector('[data-event-kind]').textContent, by: r.querySelector('[data-by]').textContent,
  })));
  assert.deepEqual(shown, events.map((e) => ({ kind: e.kind, by: e.by })), 'every event, oldest first, with who did it');
  const kinds = shown.map((e) => e.kind);
  for (const kind of ['created', 'claimed', 'failed', 'retried', 'completed']) assert.ok(kinds.includes(kind), `${kind} in ${kinds}`);
  assert.ok(kinds.indexOf('failed') < kinds.indexOf('retried') && kinds.indexOf('retried') < kinds.lastIndexOf('claimed'));
  assert.equal(shown.find((e) => e.kind === 'created').by, `user:${user}`);
  assert.equal(shown.find((e) => e.kind === 'retried').by, `user:${user}`);
  const failedRow = dialog.locator('tr[data-kind="failed"]');
  assert.match(await failedRow.textContent(), /Simulated failure on attempt 1/);
  assert.match(await dialog.textContent(), /"failAttempts": 1/);
  assert.match(await dialog.locator('.errors').textContent(), /Attempt 1 at .*Simulated failure on attempt 1/);
  assert.match(await dialog.textContent(), /Automatic retriesOff/);
  await accessible(t, page, 'the detail dialog');
  await shot(dialog, 'scale-10-detail');

  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')), `Details of task ${taskId}`);

  // At 375 px the detail still fits.
  const phone = await open(user, { width: 375, height: 812 });
  await row(phone, taskId).getByRole('button', { name: /^Details/ }).click();
  await phone.getByRole('dialog').locator('tr[data-kind="completed"]').waitFor();
  assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= 375));
  await accessible(t, phone, 'the detail dialog at 375 px');
  await shot(phone, 'scale-11-detail-375px');
  assert.deepEqual([...page.errors, ...phone.errors], []);
  await phone.context().close();
  await page.context().close();
});

test('with a token, bulk retry claims no user: the server takes it from the token, and the timeline says bulk:<sub>', async () => {
  const secret = 'e2e-scale-secret';
  const secured = await startService({ JOBS_AUTH_SECRET: secret });
  try {
    const token = mintToken(secret, 'scale-token-user');
    const call = async (action, { method = 'GET', query = {}, body } = {}) => {
      const response = await fetch(`${secured.base}/api/jobs?${new URLSearchParams({ action, ...query })}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      return response.json();
    };
    const { taskId } = await call('create', { method: 'POST', body: { type: 'demo', payload: FAILS_ONCE } });
    const deadline = Date.now() + 20000;
    while ((await call('get', { query: { taskId } })).task.status !== 'failed') {
      assert.ok(Date.now() < deadline, 'the task fails');
      await new Promise((r) => setTimeout(r, 50));
    }
    const context = await setup.browser.newContext();
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => { if (new URL(r.url()).pathname === '/api/jobs') requests.push(r); });
    await page.goto(`${secured.base}/#token=${token}`);
    await row(page, taskId).getByRole('checkbox').check();
    await page.getByRole('button', { name: 'Retry selected (1)' }).click();
    await page.getByRole('dialog', { name: 'Retry 1 failed task?' }).waitFor();
    await page.locator('#confirm-ok').click();
    await page.locator('#toasts .toast').getByText('Retried 1', { exact: true }).waitFor();

    const bulk = requests.find((r) => new URL(r.url()).searchParams.get('action') === 'retryMany');
    assert.deepEqual(JSON.parse(bulk.postData()), { taskIds: [taskId] });
    for (const request of requests) {
      assert.equal(new URL(request.url()).searchParams.get('userId'), null, request.url());
      assert.equal(request.headers().authorization, `Bearer ${token}`);
    }
    const actions = new Set(requests.map((r) => new URL(r.url()).searchParams.get('action')));
    assert.ok(actions.has('groups') && actions.has('list'), [...actions].join());
    const { events } = (await call('get', { query: { taskId } })).task;
    assert.ok(events.some((e) => e.kind === 'retried' && e.by === 'bulk:scale-token-user'), JSON.stringify(events));
    await context.close();
  } finally {
    secured.stop();
  }
});

test('a task\'s steps in its detail: done, failed and not reached; "Retry from step 4" runs only steps 4 and 5, "Restart from the beginning" all five', async (t) => {
  const user = 'steps-detail';
  const example = { steps: 5, stepMs: 200, failAttempts: 1, failAtStep: 4 };
  const [resumed, restarted] = [await setup.jobs.createDemo(user, example), await setup.jobs.createDemo(user, example)];
  await setup.jobs.waitForStatus(user, resumed, 'failed');
  await setup.jobs.waitForStatus(user, restarted, 'failed');
  const page = await open(user);
  const states = (dialog) => dialog.locator('.steps tbody tr').evaluateAll((rows) => rows.map((r) => [
    r.dataset.step, r.dataset.stepState, r.querySelector('[data-label="Attempt"]').textContent,
  ]));

  const openDetail = async (taskId) => {
    await row(page, taskId).getByRole('button', { name: `Details of task ${taskId}` }).click();
    const dialog = page.getByRole('dialog', { name: `demo task …${taskId.slice(-8)}` });
    await dialog.locator('.steps').waitFor();
    return dialog;
  };
  let dialog = await openDetail(resumed);
  assert.deepEqual(await states(dialog), [
    ['step-1', 'done', '1'], ['step-2', 'done', '1'], ['step-3', 'done', '1'],
    ['step-4', 'failed', '1'], ['step-5', 'not reached', ''],
  ]);
  assert.match(await dialog.locator('tr[data-step="step-4"]').textContent(), /Simulated failure on attempt 1/);
  assert.match(await dialog.locator('tr[data-step="step-1"]').textContent(), /\d+ ms\s+\{"step":1,"attempt":1\}/);
  assert.match(await dialog.locator('.detail-actions').textContent(), /keeps the outputs of steps 1–3/);
  await accessible(t, page, 'the detail dialog with steps');
  await shot(dialog, 'steps-1-failed-at-4');

  const requests = await slowDown(page, 'retry', 0);
  const fromStep4 = dialog.getByRole('button', { name: 'Retry from step 4' });
  await fromStep4.focus();
  await page.keyboard.press('Enter');
  await dialog.locator('tr[data-kind="completed"]').waitFor({ timeout: 20000 });
  assert.deepEqual(requests.map((r) => JSON.parse(r.body)), [{ taskId: resumed, from: 'failedStep', userId: user }]);
  assert.deepEqual(await states(dialog), [
    ['step-1', 'done', '1'], ['step-2', 'done', '1'], ['step-3', 'done', '1'],
    ['step-4', 'done', '2'], ['step-5', 'done', '2'],
  ]);
  assert.match(await dialog.locator('tr[data-kind="resumed"]').textContent(), /step-4/);
  await shot(dialog, 'steps-2-resumed');
  await page.keyboard.press('Escape');

  dialog = await openDetail(restarted);
  await dialog.getByRole('button', { name: 'Restart from the beginning' }).click();
  await dialog.locator('tr[data-kind="completed"]').waitFor({ timeout: 20000 });
  assert.deepEqual((await states(dialog)).map(([, state, attempt]) => [state, attempt]), Array(5).fill(['done', '2']));
  assert.match(await dialog.locator('tr[data-kind="retried"]').last().textContent(), /From the start: stored steps discarded/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('"Edit and retry": JSON checked as it is typed, the processor\'s refusal next to the field, the changes reviewed, then version 2 runs and the versions are listed', async (t) => {
  const user = 'edit-retry';
  const taskId = await setup.jobs.createDemo(user, { steps: 3, stepMs: 0, failAttempts: 100, failAtStep: 2 });
  await setup.jobs.waitForStatus(user, taskId, 'failed');
  const page = await open(user);
  await row(page, taskId).getByRole('button', { name: `Details of task ${taskId}` }).click();
  const detail = page.getByRole('dialog', { name: `demo task …${taskId.slice(-8)}` });
  await detail.getByRole('button', { name: 'Edit and retry' }).click();
  const editor = page.getByRole('dialog', { name: /^Edit and retry/ });
  const field = editor.getByLabel('Payload (JSON)');
  await field.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'editor-payload', 'focus moves to the editor');
  assert.deepEqual(JSON.parse(await field.inputValue()), { steps: 3, stepMs: 0, failAttempts: 100, failAtStep: 2 });

  await field.fill('{"steps": 3,');
  assert.match(await editor.locator('#editor-check').textContent(), /^Not valid JSON/);
  assert.equal(await field.getAttribute('aria-invalid'), 'true');
  assert.equal(await editor.getByRole('button', { name: 'Review changes' }).isDisabled(), true);

  // The processor refuses it: its message shows next to the field, and nothing changed.
  await field.fill(JSON.stringify({ steps: 3, stepMs: 0, failAtStep: 5 }));
  await editor.getByRole('button', { name: 'Review changes' }).click();
  await editor.getByRole('button', { name: 'Retry with version 2' }).click();
  await editor.locator('#editor-refusal:not([hidden])').waitFor();
  assert.equal(await editor.locator('#editor-refusal').textContent(), 'Invalid payload: failAtStep must be between 1 and steps (3)');
  assert.equal((await setup.jobs.task(user, taskId)).payloadVersion, 1);

  await field.fill(JSON.stringify({ steps: 3, stepMs: 0 }, null, 2));
  assert.equal(await editor.locator('#editor-refusal').isHidden(), true, 'the refusal goes with the text it was about');
  await editor.getByRole('button', { name: 'Review changes' }).click();
  assert.deepEqual(await editor.locator('.changes li').allTextContents(), ['removed /failAttempts (was 100)', 'removed /failAtStep (was 2)']);
  await accessible(t, page, 'the payload editor');
  await shot(editor, 'edit-1-review');
  await editor.getByRole('button', { name: 'Retry with version 2' }).click();
  await editor.waitFor({ state: 'hidden' });
  await detail.locator('tr[data-kind="completed"]').waitFor({ timeout: 20000 });
  const version2 = detail.locator('.versions li[data-version="2"]');
  assert.match(await version2.textContent(), new RegExp(`Version 2 by user:${user} at .*removed /failAttempts.*removed /failAtStep`, 's'));
  const stored = await setup.jobs.task(user, taskId);
  assert.equal(stored.payloadVersion, 2);
  assert.deepEqual(stored.payload, { steps: 3, stepMs: 0 });
  await shot(detail, 'edit-2-versions');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('"Fix and retry all (n)": a merge patch previewed by a dry run (counts, the refused one and why, example changes), then applied to the whole cause', async (t) => {
  const user = 'fix-group';
  const fits = [];
  for (let i = 0; i < 3; i += 1) fits.push(await setup.jobs.createDemo(user, { steps: 3, stepMs: 0, failAttempts: 100 }));
  const refused = await setup.jobs.createDemo(user, { steps: 2, stepMs: 0, failAttempts: 100 });
  for (const id of [...fits, refused]) await setup.jobs.waitForStatus(user, id, 'failed');
  const page = await open(user);
  const fix = page.getByRole('button', { name: /^Fix and retry all \(4\)/ });
  await fix.waitFor({ timeout: 20000 });
  await fix.click();
  const dialog = page.getByRole('dialog', { name: /^Fix and retry all \(4\)/ });
  const field = dialog.getByLabel('Correction (JSON Merge Patch)');
  await field.fill('{"failAttempts": ');
  assert.match(await dialog.locator('#fixer-check').textContent(), /^Not valid JSON/);
  assert.equal(await dialog.getByRole('button', { name: 'Preview' }).isDisabled(), true);
  await field.fill(JSON.stringify({ failAttempts: null, failAtStep: 3 }));
  const before = await Promise.all([...fits, refused].map((id) => setup.jobs.task(user, id)));
  await dialog.getByRole('button', { name: 'Preview' }).click();
  await dialog.locator('[data-would-retry="3"]').waitFor();
  assert.match(await dialog.locator('#fixer-preview').textContent(), /Would retry 3, skip 1/);
  assert.match(await dialog.locator('[data-skip="INVALID_PAYLOAD"]').textContent(), /failAtStep must be between 1 and steps \(2\)/);
  assert.equal(await dialog.locator('.examples > li').count(), 3);
  assert.match(await dialog.locator('.examples > li').first().textContent(), /added \/failAtStep: 3.*removed \/failAttempts/s);
  const after = await Promise.all([...fits, refused].map((id) => setup.jobs.task(user, id)));
  assert.deepEqual(after.map((x) => [x.status, x.payloadVersion]), before.map((x) => [x.status, x.payloadVersion]), 'the preview changed nothing');
  await accessible(t, page, 'the fix dialog with its preview');
  await shot(dialog, 'fix-1-preview');

  await dialog.getByRole('button', { name: 'Fix and retry 3' }).click();
  await dialog.waitFor({ state: 'hidden' });
  for (const id of fits) {
    await setup.jobs.waitForStatus(user, id, 'completed');
    const task = await setup.jobs.task(user, id);
    assert.equal(task.payloadVersion, 2);
    assert.deepEqual(task.payload, { steps: 3, stepMs: 0, failAtStep: 3 });
  }
  const left = await setup.jobs.task(user, refused);
  assert.deepEqual([left.status, left.payloadVersion], ['failed', 1]);
  await page.getByRole('button', { name: /^Fix and retry all \(1\)/ }).waitFor({ timeout: 30000 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
