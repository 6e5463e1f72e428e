// Test support for the browser tests: the real `jobs` binary serving the page from public/,
// a fresh database on the SecantusDB that scripts/test started, and headless Debian Chromium.
// `startService(env, { via: 'vercel-dev' })` (or JOBS_E2E_VIA=vercel-dev for every service)
// runs the same binary under `vercel dev` instead, as e2e/vercel-dev.mjs reproduces it.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHmac, randomUUID } from 'node:crypto';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SCREENSHOTS = join(ROOT, 'target', 'e2e-screenshots');
const BINARY = join(ROOT, 'target', 'debug', 'jobs');
const VERCEL_DEV = join(ROOT, 'e2e', 'vercel-dev.mjs');
/** What the Vercel CLI would inherit from a developer's shell: the Rust toolchain. */
const TOOLCHAIN_ENV = ['PATH', 'HOME', 'CARGO_HOME', 'RUSTUP_HOME', 'RUSTUP_TOOLCHAIN', 'CARGO_TARGET_DIR', 'RUSTFLAGS'];
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

/**
 * Starts `jobs` with the page; `env` overrides its environment. `via: 'vercel-dev'` runs it
 * under e2e/vercel-dev.mjs instead (one `jobs` process per request, built by `cargo build`, the
 * page served from public/), with `env` as the project's `.env`.
 */
export async function startService(env = {}, { via = process.env.JOBS_E2E_VIA || 'binary' } = {}) {
  const dbUri = process.env.JOBS_TEST_MONGODB_URI;
  if (!dbUri) throw new Error('JOBS_TEST_MONGODB_URI is not set: run the tests with scripts/test');
  if (via === 'binary' && !existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build first (scripts/test does)`);
  const port = await freePort();
  const logDir = join(ROOT, 'target', 'e2e-logs');
  mkdirSync(logDir, { recursive: true });
  const db = `e2e_${randomUUID().replace(/-/g, '')}`;
  const logPath = join(logDir, `${db}.log`);
  const log = openSync(logPath, 'a');
  let child;
  let stop;
  if (via === 'vercel-dev') {
    // The project's .env as `vercel dev` reads it; VERCEL_URL named, so it becomes localhost:<port>.
    const dotenv = { MONGODB_URI: dbUri, MONGODB_DB: db, RUST_LOG: 'info,mongodb=warn', VERCEL_URL: '', ...env };
    const envFile = join(logDir, `${db}.env`);
    writeFileSync(envFile, Object.entries(dotenv).map(([key, value]) => `${key}='${value}'\n`).join(''));
    const inherited = Object.fromEntries(TOOLCHAIN_ENV.filter((k) => k in process.env).map((k) => [k, process.env[k]]));
    child = spawn(process.execPath, [VERCEL_DEV, '--listen', String(port), '--env-file', envFile, '--log', logPath], {
      cwd: ROOT,
      env: inherited,
      stdio: ['ignore', log, log],
      detached: true, // its own process group: stop() ends it with its cargo and jobs processes
    });
    stop = () => {
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    };
  } else if (via === 'binary') {
    child = spawn(BINARY, [], {
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
    stop = () => child.kill();
  } else {
    throw new Error(`unknown via: ${via} (binary or vercel-dev)`);
  }
  const base = `http://127.0.0.1:${port}`;
  // Under vercel-dev.mjs the first answer waits for `cargo build`.
  let health;
  for (let i = 0; i < 300 && !health; i++) {
    health = await fetch(`${base}/api/jobs?action=health`).catch(() => sleep(20));
  }
  if (health?.status === 502) {
    stop();
    throw new Error(`the function did not start under vercel-dev.mjs: ${await health.text()}see ${logPath}`);
  }
  return {
    base,
    via,
    log: logPath,
    stop,
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

/**
 * A page of the Task Manager, acting as `userId` (remembered as the page would); `search` is
 * the page's query (`?live=poll` keeps it polling, as the tests of polling need).
 */
export async function openPage(browser, service, userId, viewport = { width: 1280, height: 800 }, search = '') {
  const context = await browser.newContext({ viewport });
  await context.addInitScript((id) => localStorage.setItem('jobs.userId', id), userId);
  const page = await context.newPage();
  await page.goto(`${service.base}/${search}`);
  return page;
}

/** `?live=poll`: the page polls `list` instead of reading the `watch` stream. */
export const POLLING = '?live=poll';

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

const AXE_SOURCE = join(ROOT, 'e2e', 'node_modules', 'axe-core', 'axe.min.js');

/**
 * Runs axe-core (pinned in package.json) on `page` with the WCAG 2 A and AA rules, on the whole
 * document or only on `include` (a CSS selector). Returns every violation, each reduced to
 * `{id, impact, help, targets}`; `blocking` holds the serious and critical ones.
 */
export async function axe(page, { include } = {}) {
  if (!existsSync(AXE_SOURCE)) throw new Error(`${AXE_SOURCE} is missing: run npm ci in e2e/ (axe-core is pinned in e2e/package.json)`);
  // Evaluated, not added as a <script>: the page's Content-Security-Policy refuses inline scripts.
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(readFileSync(AXE_SOURCE, 'utf8'));
  const violations = await page.evaluate(async (selector) => {
    const result = await window.axe.run(selector ? { include: [selector] } : document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] },
      resultTypes: ['violations'],
    });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')),
    }));
  }, include ?? null);
  return { violations, blocking: violations.filter((v) => v.impact === 'serious' || v.impact === 'critical') };
}

/**
 * An HS256 JWT as a host application's backend would mint it for `sub`, valid for 10 minutes
 * (`expiresIn` seconds; negative: expired that long ago).
 */
export function mintToken(secret, sub, { expiresIn = 600 } = {}) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ sub, exp: Math.floor(Date.now() / 1000) + expiresIn })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** The security headers vercel.json gives the page (its `headers` entry), `[[name, value]]`. */
export const PAGE_HEADERS = JSON.parse(readFileSync(join(ROOT, 'vercel.json'), 'utf8'))
  .headers.flatMap((entry) => entry.headers.map(({ key, value }) => [key, value]));

/** The page's policy must keep these directives, whatever else it says. */
const CSP_ESSENTIALS = ["default-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
  "form-action 'self'", "frame-ancestors 'none'"];

/**
 * What is wrong with a page response's security headers (a `Headers`): each of PAGE_HEADERS with
 * its value, a policy with its essentials and nothing unsafe, no referrer, no sniffing. [] when right.
 */
export function securityHeaderProblems(headers) {
  const problems = PAGE_HEADERS
    .filter(([name, value]) => headers.get(name) !== value)
    .map(([name, value]) => `${name} is ${JSON.stringify(headers.get(name))}, not ${JSON.stringify(value)}`);
  const policy = (headers.get('content-security-policy') ?? '').split(';').map((d) => d.trim());
  for (const directive of CSP_ESSENTIALS) if (!policy.includes(directive)) problems.push(`the policy lacks ${directive}`);
  if (policy.some((d) => /unsafe-inline|unsafe-eval/.test(d))) problems.push('the policy allows unsafe-inline or unsafe-eval');
  if (headers.get('referrer-policy') !== 'no-referrer') problems.push('Referrer-Policy is not no-referrer');
  if (headers.get('x-content-type-options') !== 'nosniff') problems.push('X-Content-Type-Options is not nosniff');
  return problems;
}

/**
 * Collects Content-Security-Policy violations on every page of `context`: the
 * `securitypolicyviolation` events the page sees, and Chromium's console reports of them.
 */
export async function watchCsp(context) {
  const violations = [];
  await context.exposeFunction('__reportCspViolation', (v) => violations.push(v));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__reportCspViolation(`${e.violatedDirective} refused ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  context.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) violations.push(message.text());
  });
  return violations;
}

/**
 * Registers node:test hooks that launch Chromium and start one service for the whole file, and
 * stop both afterwards. Returns a handle whose `browser` and `jobs` are set once `before` ran.
 */
export function browserAndService(env = {}, options = {}) {
  const handle = { browser: undefined, jobs: undefined };
  before(async () => {
    handle.browser = await launchBrowser();
    handle.jobs = await startService(env, options);
  });
  after(async () => {
    await handle.browser?.close();
    handle.jobs?.stop();
  });
  return handle;
}
