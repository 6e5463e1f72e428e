// What open Task Manager pages cost the database, polling vs `watch` (docs/spec.md §18), and how
// long a change takes to reach a watcher. Real pages in headless Chromium, the real binary, its
// own SecantusDB (commands counted by the server itself: `serverStatus` opcounters, read with the
// pymongo of the SecantusDB install, so the change stream's `getMore`s count too).
//
// 1. WATCH_COST_PAGES (default 20) idle pages of one user each (nothing queued or running) for
//    WATCH_COST_SECONDS (default 60): first with `?live=poll`, then reading `watch`.
// 2. With those pages still open, WATCH_COST_WRITES (default 200) creates, one after another:
//    from sending each `create` (its insert is inside it) to its `task` event reaching a watcher
//    of the same process (an upper bound on write-to-event).
//
// Run by `scripts/bench watch` (BENCHMARKS.md, "Live updates"); directly, with a SecantusDB
// running: JOBS_TEST_MONGODB_URI=mongodb://127.0.0.1:<port> SECANTUS_PYTHON=.local/venv/bin/python node e2e/watch-cost.mjs

import { execFileSync } from 'node:child_process';
import { launchBrowser, startService } from './harness.mjs';
import { frames } from '../public/js/live.js';

const PAGES = Number(process.env.WATCH_COST_PAGES || 20);
const SECONDS = Number(process.env.WATCH_COST_SECONDS || 60);
const WRITES = Number(process.env.WATCH_COST_WRITES || 200);
const PYTHON = process.env.SECANTUS_PYTHON || '.local/venv/bin/python';
const DB = process.env.JOBS_TEST_MONGODB_URI;

/** The server's command count so far: every opcounter summed. */
function commands() {
  const script = `import pymongo,sys; c=pymongo.MongoClient(sys.argv[1]); o=c.admin.command('serverStatus')['opcounters']; print(sum(int(v) for v in o.values()))`;
  return Number(execFileSync(PYTHON, ['-c', script, DB]).toString().trim());
}

async function openPages(browser, jobs, search) {
  const contexts = [];
  for (let i = 0; i < PAGES; i++) {
    const context = await browser.newContext();
    await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), `idle-${i}`);
    const page = await context.newPage();
    await page.goto(`${jobs.base}/${search}`);
    const mode = search ? 'poll' : 'push';
    await page.locator(`#live[data-mode="${mode}"]`).waitFor({ timeout: 15000 });
    contexts.push(context);
  }
  // Past the pages' first loads.
  await new Promise((r) => setTimeout(r, 2000));
  return contexts;
}

async function idleCost(browser, jobs, search) {
  const contexts = await openPages(browser, jobs, search);
  const before = commands();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const spent = commands() - before - 1; // less this read itself
  return { contexts, perMinute: Math.round((spent * 60) / SECONDS) };
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

const jobs = await startService();
const browser = await launchBrowser();
try {
  // One task per user, finished: what an idle page shows.
  for (let i = 0; i < PAGES; i++) await jobs.createDemo(`idle-${i}`, { steps: 1, stepMs: 0 });
  const polled = await idleCost(browser, jobs, '?live=poll');
  for (const context of polled.contexts) await context.close();
  const pushed = await idleCost(browser, jobs, '');

  // Write-to-event: a watcher in this process (Node's fetch, as the page reads it).
  const user = 'latency';
  const response = await fetch(`${jobs.base}/api/jobs?action=watch&userId=${user}`);
  const stream = frames(response.body)[Symbol.asyncIterator]();
  const first = await stream.next();
  if (first.value?.event !== 'ready') throw new Error(`expected ready, got ${JSON.stringify(first.value)}`);
  const latencies = [];
  for (let i = 0; i < WRITES; i++) {
    const sent = performance.now();
    const taskId = await jobs.createDemo(user, { steps: 1, stepMs: 0 });
    for (;;) {
      const { value, done } = await stream.next();
      if (done) throw new Error('the stream ended');
      if (value.event === 'task' && JSON.parse(value.data).taskId === taskId) break;
    }
    latencies.push(performance.now() - sent);
  }
  await stream.return?.();
  for (const context of pushed.contexts) await context.close();
  latencies.sort((a, b) => a - b);

  console.log(`${PAGES} idle pages, ${SECONDS} s each way; MongoDB commands the server counted:`);
  console.log();
  console.log('| pages read changes by | MongoDB commands per minute | per page |');
  console.log('| --- | ---: | ---: |');
  console.log(`| polling \`list\` (\`?live=poll\`) | ${polled.perMinute} | ${(polled.perMinute / PAGES).toFixed(1)} |`);
  console.log(`| \`watch\` | ${pushed.perMinute} | ${(pushed.perMinute / PAGES).toFixed(1)} |`);
  console.log();
  console.log(`Write to event, ${WRITES} creates with ${PAGES} pages watching: p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms, max ${latencies.at(-1).toFixed(1)} ms`);
} finally {
  await browser.close();
  jobs.stop();
}
