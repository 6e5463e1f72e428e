// Test support for the browser tests: the real `jobs` binary serving the page from public/,
// a fresh database on the SecantusDB that scripts/test started, and headless Debian Chromium.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SCREENSHOTS = join(ROOT, 'target', 'e2e-screenshots');
const BINARY = join(ROOT, 'target', 'debug', 'jobs');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `jobs` with the page; `env` overrides its environment. */
export async function startService(env = {}) {
  const dbUri = process.env.JOBS_TEST_MONGODB_URI;
  if (!dbUri) throw new Error('JOBS_TEST_MONGODB_URI is not set: run the tests with scripts/test');
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build first (scripts/test does)`);
  const port = await freePort();
  const logDir = join(ROOT, 'target', 'e2e-logs');
  mkdirSync(logDir, { recursive: true });
  const db = `e2e_${randomUUID().replace(/-/g, '')}`;
  const log = openSync(join(logDir, `${db}.log`), 'w');
  const child = spawn(BINARY, [], {
    env: {
      PATH: process.env.PATH,
      RUST_LOG: 'info,mongodb=warn',
      MONGODB_URI: dbUri,
      MONGODB_DB: db,
      PORT: String(port),
      VERCEL_DEV_PORT: String(port),
      JOBS_STATIC_DIR: join(ROOT, 'public'),
      ...env,
    },
    stdio: ['ignore', log, log],
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      await fetch(`${base}/api/jobs?action=health`);
      break;
    } catch {
      await sleep(20);
    }
  }
  return {
    base,
    stop: () => child.kill(),
    async api(action, { method = 'GET', query = {}, body } = {}) {
      const params = new URLSearchParams({ action, ...query });
      const response = await fetch(`${base}/api/jobs?${params}`, {
        method,
        headers: body ? { 'Content-Type': 'application/json' } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: response.status, body: await response.json() };
    },
    async task(userId, taskId) {
      return (await this.api('get', { query: { taskId, userId } })).body.task;
    },
    async waitForStatus(userId, taskId, status, timeoutMs = 20000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const task = await this.task(userId, taskId);
        if (task?.status === status) return task;
        if (Date.now() > deadline) throw new Error(`task ${taskId} never became ${status}: ${JSON.stringify(task)}`);
        await sleep(50);
      }
    },
    async createDemo(userId, payload, extra = {}) {
      const reply = await this.api('create', { method: 'POST', body: { type: 'demo', userId, payload, ...extra } });
      if (reply.status !== 201) throw new Error(`create: ${JSON.stringify(reply.body)}`);
      return reply.body.taskId;
    },
  };
}

/** Headless Debian Chromium; the flags keep it off this machine's closed network. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (scripts/test does it as root)`);
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/** A page of the Task Manager, acting as `userId` (remembered as the page would). */
export async function openPage(browser, service, userId, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), userId);
  const page = await context.newPage();
  await page.goto(`${service.base}/`);
  return page;
}

export const row = (page, taskId) => page.locator(`tr[data-task-id="${taskId}"]`);
export const shot = (target, name, options = {}) => target.screenshot({ path: join(SCREENSHOTS, `${name}.png`), ...options });

/** Holds requests of `action` for `ms` before letting them reach the server. */
export async function slowDown(page, action, ms) {
  const seen = [];
  await page.route((url) => url.searchParams.get('action') === action, async (route) => {
    seen.push({ method: route.request().method(), body: route.request().postData() });
    await sleep(ms);
    await route.continue();
  });
  return seen;
}
