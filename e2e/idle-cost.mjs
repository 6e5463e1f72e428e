// What one open Task Manager page costs the database: the page in headless Chromium, acting for
// a user with 5 tasks processing the whole time (demo tasks of 100 steps of 1.5 s), for 60 s
// from the moment it opens. Sums the `x-jobs-db-commands` header (development only, docs/spec.md
// §5) of every API response the page received, by action. Prints a Markdown table.
//
// Run by `scripts/bench idle` (BENCHMARKS.md, "An open page"); directly, with a SecantusDB
// running: JOBS_TEST_MONGODB_URI=mongodb://127.0.0.1:<port> node e2e/idle-cost.mjs
// IDLE_COST_SECONDS (default 60) sets the window, IDLE_COST_ACTIVE (default 5) the number of
// tasks processing (0: one completed task, a page with nothing to follow live).

import { launchBrowser, startService } from './harness.mjs';

const SECONDS = Number(process.env.IDLE_COST_SECONDS || 60);
const ACTIVE_TASKS = Number(process.env.IDLE_COST_ACTIVE ?? 5);
// 150 s of work each (within the default 240 s work budget): processing for the whole window.
const LONG_TASK = { steps: 100, stepMs: 1500 };
const USER = 'idle-cost';

const jobs = await startService();
const browser = await launchBrowser();
try {
  const tasks = [];
  for (let i = 0; i < ACTIVE_TASKS; i++) tasks.push(await jobs.createDemo(USER, LONG_TASK));
  for (const taskId of tasks) await jobs.waitForStatus(USER, taskId, 'processing');
  if (ACTIVE_TASKS === 0) await jobs.waitForStatus(USER, await jobs.createDemo(USER, { steps: 1, stepMs: 0 }), 'completed');

  // As harness.mjs `openPage`, with the counting in place before the page's first request.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), USER);
  const byAction = new Map();
  let unknown = 0;
  context.on('response', (response) => {
    const url = new URL(response.url());
    if (url.pathname !== '/api/jobs') return;
    const action = url.searchParams.get('action');
    const entry = byAction.get(action) ?? { requests: 0, commands: 0, notModified: 0, bytes: 0 };
    entry.requests += 1;
    if (response.status() === 304) entry.notModified += 1;
    const commands = response.headers()['x-jobs-db-commands'];
    if (commands === undefined) unknown += 1;
    else entry.commands += Number(commands);
    entry.bytes += Number(response.headers()['content-length'] ?? 0);
    byAction.set(action, entry);
  });
  const started = Date.now();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(`${jobs.base}/`);
  await page.locator('tr[data-task-id]').first().waitFor();
  await page.waitForTimeout(Math.max(0, SECONDS * 1000 - (Date.now() - started)));
  await context.close();
  if (errors.length) throw new Error(`the page failed: ${errors.join('; ')}`);

  for (const taskId of tasks) {
    const { status } = await jobs.task(USER, taskId);
    if (status !== 'processing') throw new Error(`task ${taskId} is ${status}, not processing, at the end: make the tasks longer`);
  }
  if (unknown > 0) throw new Error(`${unknown} responses without x-jobs-db-commands (a deployed setting?)`);
  const rows = [...byAction.entries()].sort(([a], [b]) => a.localeCompare(b));
  const total = rows.reduce((sum, [, e]) => sum + e.commands, 0);
  console.log(`One page, ${ACTIVE_TASKS} tasks processing, ${SECONDS} s from opening the page:`);
  console.log();
  console.log('| action | requests | of them 304 | MongoDB commands | body bytes |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [action, e] of rows) console.log(`| \`${action}\` | ${e.requests} | ${e.notModified} | ${e.commands} | ${e.bytes} |`);
  console.log(`| all | ${rows.reduce((s, [, e]) => s + e.requests, 0)} | ${rows.reduce((s, [, e]) => s + e.notModified, 0)} | ${total} | ${rows.reduce((s, [, e]) => s + e.bytes, 0)} |`);
  console.log();
  console.log(`MongoDB commands per minute: ${Math.round((total * 60) / SECONDS)}`);
} finally {
  await browser.close();
  jobs.stop();
}
