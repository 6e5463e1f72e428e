#!/usr/bin/env node
// A stand-in for `vercel dev` (CLI 58.10.0) for this project, for tests and local runs:
// `vercel dev` itself needs a Vercel login, but the part of it that runs a Rust function is the
// builder it ships, @vercel/rust, whose startDevServer() this calls the way `vercel dev` does.
//
//   node e2e/vercel-dev.mjs [--listen <port>] [--env-file <file>] [--log <file>]
//
// Reproduced:
// - One process per function request, as `vercel dev` runs a Rust function: startDevServer()
//   runs `cargo build --bin jobs`, spawns target/debug/jobs with this process's environment, the
//   function env, VERCEL_DEV=1, RUST_LOG (default info) and a fresh VERCEL_DEV_PORT, and waits
//   for `Dev server listening: <port>`. The request (method, ORIGINAL path and query, headers
//   plus vercel dev's connection/x-real-ip/x-vercel-* ones, body) is proxied to
//   http://127.0.0.1:<port> and the answer streamed back. When the response closes, shutdown()
//   sends SIGTERM: vercel_runtime drains `wait_until` work for up to 30 s, then exits.
// - The function env as `vercel dev` builds it from `.env` (or --env-file): the file's
//   variables, VERCEL_URL rewritten to localhost:<port> when the file names it (or set when
//   there is no file or it is empty), NOW_REGION=dev1. Plain http, so VERCEL_URL has no scheme.
// - vercel.json: `functions` (*.rs entrypoints, reached as /api/jobs and /api/jobs.rs) and
//   `rewrites` with literal sources. Like `vercel dev` (and Vercel), a rewritten request reaches
//   the function with its original path, `/api/index.js?...`, plus the destination's query.
// - vercel.json `headers`: each `source` compiled as Vercel's routing-utils compiles it
//   (path-to-regexp 6.1.0, strict, case-sensitive; the CLI bundles its copy, so this takes the
//   one its @vercel/node builder ships) and matched against the request's original path; a
//   match sets its headers on the response, whatever answers it (a file, a 404, the function).
// - Everything else is a static file from public/ (`/` is public/index.html), or 404.
//
// Not reproduced: login, project linking and the Development env pulled from Vercel (put it in
// the env file), `.env.build`, patterns in rewrite sources, `has`/`missing` and `:name`
// substitution in headers, routes/redirects/cleanUrls,
// middleware, crons (call action=sweep yourself), maxDuration, HTTPS, the build-and-invoke
// fallback when the binary does not start (this answers 502), file watching (the env file is
// re-read per request instead), and vercel dev's leak of a function whose client hung up
// before it was ready (this shuts it down).

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { createRequire } from 'node:module';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, parseEnv, promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PUBLIC = join(ROOT, 'public');
const { values: args } = parseArgs({
  options: { listen: { type: 'string' }, 'env-file': { type: 'string' }, log: { type: 'string' } },
});
const ENV_FILE = resolve(args['env-file'] ?? join(ROOT, '.env'));
const logFile = args.log && createWriteStream(args.log, { flags: 'a' });
const out = (chunk) => (logFile || process.stdout).write(chunk);
const err = (chunk) => (logFile || process.stderr).write(chunk);
const note = (line) => out(`[vercel-dev] ${line}\n`);

// The builder of the installed CLI: e2e/node_modules/vercel/node_modules/@vercel/rust, or hoisted.
const fromCli = createRequire(join(ROOT, 'e2e', 'node_modules', 'vercel', 'package.json'));
let startDevServer;
let pathToRegexp;
try {
  ({ startDevServer } = fromCli('@vercel/rust'));
  ({ pathToRegexp } = createRequire(fromCli.resolve('@vercel/node/package.json'))('path-to-regexp'));
} catch {
  console.error('vercel-dev.mjs: @vercel/rust or @vercel/node is missing: run `npm ci` in e2e/ (the vercel CLI brings them)');
  process.exit(1);
}

const config = JSON.parse(readFileSync(join(ROOT, 'vercel.json'), 'utf8'));
const entrypoints = Object.keys(config.functions ?? {}).filter((file) => file.endsWith('.rs'));
const rewrites = config.rewrites ?? [];
for (const { source } of rewrites) {
  if (/[:(*]/.test(source)) note(`warning: rewrite source ${source} is a pattern; only literal sources are applied`);
}

// `headers`: routing-utils' convertHeaders, `{src: sourceToRegex(source), headers, continue: true}`.
const headerRoutes = (config.headers ?? []).map(({ source, headers, has, missing }) => {
  if (has || missing) note(`warning: headers for ${source} have has/missing conditions; they are applied unconditionally`);
  const src = pathToRegexp(source, [], { strict: true, sensitive: true, delimiter: '/' });
  return { src, headers: headers.map(({ key, value }) => [key, value]) };
});

let host; // localhost:<port>, once listening

/** The env `vercel dev` hands the builder (its `envConfigs.runEnv`); startDevServer adds the rest. */
function functionEnv() {
  const env = existsSync(ENV_FILE) ? { ...parseEnv(readFileSync(ENV_FILE, 'utf8')) } : {};
  if ('VERCEL_URL' in env || Object.keys(env).length === 0) env.VERCEL_URL = host;
  return { ...env, NOW_REGION: 'dev1' };
}

const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection'];

async function invoke(entrypoint, req, res, path) {
  const started = Date.now();
  let closed = false;
  res.once('close', () => { closed = true; });
  const fn = await startDevServer({
    entrypoint,
    workPath: ROOT,
    meta: { isDev: true, env: functionEnv() },
    onStdout: out,
    onStderr: err,
  });
  if (!fn) {
    // startDevServer() keeps its reasons to itself: a binary that exited wrote to stderr above,
    // and a failed build is shown here.
    const build = await promisify(execFile)('cargo', ['build', '--bins', '--quiet', '--color=never'], { cwd: ROOT })
      .then(() => '', (error) => error.stderr);
    note(`${req.method} ${req.url} -> 502: the function did not start\n${build}`);
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('NO_RESPONSE_FROM_FUNCTION: cargo build failed or the binary exited before it listened\n');
    return;
  }
  const done = () => {
    note(`${req.method} ${req.url} -> ${res.statusCode} in ${Date.now() - started} ms (pid ${fn.pid}, SIGTERM)`);
    fn.shutdown();
  };
  if (closed) return done();
  res.once('close', done);

  const ip = req.socket.remoteAddress;
  const headers = {
    ...req.headers,
    connection: 'close',
    'x-real-ip': ip,
    'x-vercel-deployment-url': req.headers.host,
    'x-vercel-forwarded-for': ip,
    'x-vercel-id': `dev1::dev1::${Date.now()}-${randomBytes(6).toString('hex')}`,
  };
  const upstream = request({ host: '127.0.0.1', port: fn.port, method: req.method, path, headers });
  upstream.on('response', (answer) => {
    for (const name of HOP_BY_HOP) delete answer.headers[name];
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', (error) => {
    note(`${req.method} ${req.url}: ${error.message}`);
    if (res.headersSent) return res.destroy(error);
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('FUNCTION_INVOCATION_FAILED\n');
  });
  req.pipe(upstream);
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

function serveStatic(pathname, req, res) {
  let file = join(PUBLIC, decodeURIComponent(pathname));
  if (file !== PUBLIC && !file.startsWith(PUBLIC + sep)) file = null;
  if (file && existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
  if (!file || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('404: NOT_FOUND\n');
  }
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'content-length': statSync(file).size,
    'cache-control': 'public, max-age=0, must-revalidate',
  });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).pipe(res);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://localhost');
    for (const route of headerRoutes) {
      if (route.src.test(url.pathname)) for (const [key, value] of route.headers) res.setHeader(key, value);
    }
    let target = url.pathname;
    let path = req.url;
    const rewrite = rewrites.find((r) => r.source === url.pathname);
    if (rewrite) {
      const destination = new URL(rewrite.destination, 'http://localhost');
      target = destination.pathname;
      if (destination.search) {
        for (const [key, value] of destination.searchParams) url.searchParams.set(key, value);
        path = url.pathname + url.search;
      }
    }
    const entrypoint = entrypoints.find((e) => target === `/${e}` || target === `/${e.replace(/\.rs$/, '')}`);
    if (entrypoint) await invoke(entrypoint, req, res, path);
    else serveStatic(target, req, res);
  } catch (error) {
    note(`${req.method} ${req.url}: ${error.stack}`);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('500: INTERNAL_SERVER_ERROR\n');
  }
});

// Ctrl-C / SIGTERM: stop listening, close connections (which shuts their functions down) and
// exit once every function has drained, as `vercel dev` does. A second signal exits at once
// (@vercel/rust's exit hook then SIGKILLs the functions still running).
let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (signals++ > 0) process.exit(1);
    server.close();
    server.closeAllConnections();
  });
}

// Tests run this in a process group of its own: once whoever started it is gone, stop likewise.
const parent = process.ppid;
const orphaned = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(orphaned);
  process.kill(process.pid, 'SIGTERM');
}, 1000).unref();

server.listen(Number(args.listen ?? process.env.PORT ?? 3000), () => {
  host = `localhost:${server.address().port}`;
  process.stdout.write(`> Ready! Available at http://${host}\n`);
});
