#!/usr/bin/env node
// Asserts what `vercel build` wrote to the Build Output (.vercel/output) against vercel.json and
// public/: every function of vercel.json is a Rust executable with its settings (and that
// executable is not left out by .vercelignore, as `vercel deploy --prebuilt` would), every rewrite is
// a route to something that exists, every cron is valid on every plan (at most once a day, the
// Hobby rule), every `headers` entry is a route that sets those headers on every file of public/
// and leaves the functions alone, and every file of public/ is served as it is.
//
//   node scripts/check-build-output.mjs [OUTPUT_DIR] [--project DIR]
//        OUTPUT_DIR defaults to DIR/.vercel/output; DIR (vercel.json, public/, .vercelignore)
//        defaults to this repository
//   node scripts/check-build-output.mjs --self-test   the schedule and ignore-rule checkers' tables
//
// Each failure prints what was expected and what was found; the exit code is 1 if any failed.
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, extname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// ---------------------------------------------------------------------------------------------
// Cron schedules: Vercel's Hobby plan refuses any cron that can run more than once a day, so
// the minute and the hour must each be one number (not `*`, `*/n`, a list or a range). The other
// three fields may be anything cron accepts (`0 3 * * 1` is weekly, still fine).

const CRON_FIELD = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;
const CRON_NAMED = /^[\d*,/\-a-z]+$/i; // day of month, month, day of week (names like MON, JAN)

/** Why `schedule` may run more than once a day or is not a cron expression; null when fine. */
export function cronProblem(schedule) {
  if (typeof schedule !== 'string') return 'not a string';
  const fields = schedule.trim().split(/\s+/);
  if (fields.length !== 5) return `has ${fields.length} fields, a cron expression has 5`;
  const [minute, hour, ...rest] = fields;
  if (!/^\d+$/.test(minute) || Number(minute) > 59) {
    return `minute field "${minute}" is not a single minute 0-59 (runs more than once a day)`;
  }
  if (!/^\d+$/.test(hour) || Number(hour) > 23) {
    return `hour field "${hour}" is not a single hour 0-23 (runs more than once a day)`;
  }
  for (const f of rest) {
    if (!CRON_FIELD.test(f) && !CRON_NAMED.test(f)) return `field "${f}" is not valid cron syntax`;
  }
  return null;
}

const CRON_TABLE = [
  // [schedule, valid on every plan?]
  ['0 3 * * *', true],
  ['59 23 * * *', true],
  ['0 0 1 * *', true],
  ['30 4 * * 1', true],
  ['0 3 * * MON', true],
  ['*/15 * * * *', false],
  ['0 * * * *', false],
  ['* 3 * * *', false],
  ['0 */6 * * *', false],
  ['0 0,12 * * *', false],
  ['0 3-4 * * *', false],
  ['0,30 3 * * *', false],
  ['60 3 * * *', false],
  ['0 24 * * *', false],
  ['0 3 * *', false],
  ['@daily', false],
  ['', false],
];

// ---------------------------------------------------------------------------------------------
// .vercelignore rules, the gitignore syntax the CLI uses (`ignore` package): enough of it to tell
// whether a path is ignored (comments, `!`, leading and trailing `/`, `*`, `**`, `?`).

export function ignoreRules(text) {
  return text
    .split('\n')
    .map((l) => l.replace(/\s+$/, ''))
    .filter((l) => l && !l.startsWith('#'))
    .map((line) => {
      let p = line.replace(/^\.\//, '');
      const negate = p.startsWith('!');
      if (negate) p = p.slice(1);
      const dirOnly = p.endsWith('/');
      if (dirOnly) p = p.replace(/\/+$/, '');
      const anchored = p.includes('/');
      p = p.replace(/^\//, '');
      let re = '';
      for (let i = 0; i < p.length; i++) {
        if (p.startsWith('**/', i)) { re += '(?:.*/)?'; i += 2; }
        else if (p.startsWith('/**', i) && i + 3 === p.length) { re += '/.*'; i += 2; }
        else if (p[i] === '*') re += '[^/]*';
        else if (p[i] === '?') re += '[^/]';
        else re += p[i].replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      const regex = new RegExp(`${anchored ? '^' : '(?:^|/)'}${re}${dirOnly ? '/' : '(?:/|$)'}`);
      return { line, negate, regex };
    });
}

/** The rule that decides `path` (relative, with `/`), or null when none matches. */
export function ignoredBy(rules, path) {
  let decided = null;
  for (const rule of rules) if (rule.regex.test(path)) decided = rule;
  return decided && !decided.negate ? decided : null;
}

const IGNORE_TABLE = [
  // [rules, path, ignored?]
  ['/.local/', '.local/venv/bin/python3', true],
  ['/.local/', 'crates/.local/x', false],
  ['node_modules/', 'e2e/node_modules/vercel/package.json', true],
  ['/target/', 'target/vercel-build/x86_64-unknown-linux-gnu/release/jobs', true],
  ['/.local/', 'target/vercel-build/x86_64-unknown-linux-gnu/release/jobs', false],
  ['.env\n.env.*\n!.env.example', '.env', true],
  ['.env\n.env.*\n!.env.example', '.env.production', true],
  ['.env\n.env.*\n!.env.example', '.env.example', false],
  ['# comment\n*.md', 'docs/README.md', true],
  ['target/**/jobs', 'target/a/b/jobs', true],
];

// ---------------------------------------------------------------------------------------------

function selfTest() {
  let failed = 0;
  for (const [schedule, valid] of CRON_TABLE) {
    const problem = cronProblem(schedule);
    if ((problem === null) !== valid) {
      failed++;
      console.log(`FAIL cron "${schedule}": expected ${valid ? 'valid' : 'invalid'}, found ${problem ?? 'valid'}`);
    }
  }
  for (const [rules, path, ignored] of IGNORE_TABLE) {
    if ((ignoredBy(ignoreRules(rules), path) !== null) !== ignored) {
      failed++;
      console.log(`FAIL ignore ${JSON.stringify(rules)} on ${path}: expected ${ignored ? 'ignored' : 'kept'}`);
    }
  }
  const total = CRON_TABLE.length + IGNORE_TABLE.length;
  console.log(`self-test (cron schedules, .vercelignore rules): ${total - failed} passed, ${failed} failed`);
  return failed === 0;
}

// ---------------------------------------------------------------------------------------------
// The Build Output checks. Each check returns null when it holds, or {expected, found}.

const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));
const fmt = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

const ELF_MACHINES = { x86_64: 0x3e, arm64: 0xb7 };

/** Why `path` is not an executable 64-bit little-endian ELF for `architecture`; null when it is. */
function elfProblem(path, architecture) {
  const st = statSync(path);
  if ((st.mode & 0o111) === 0) return `mode ${(st.mode & 0o777).toString(8)}, not executable`;
  const head = readFileSync(path).subarray(0, 20);
  if (head.length < 20 || head.readUInt32BE(0) !== 0x7f454c46) return 'no ELF header';
  if (head[4] !== 2 || head[5] !== 1) return 'not a 64-bit little-endian ELF';
  const type = head.readUInt16LE(16);
  if (type !== 2 && type !== 3) return `ELF type ${type}, not an executable`;
  const machine = head.readUInt16LE(18);
  const want = ELF_MACHINES[architecture ?? 'x86_64'];
  if (machine !== want) return `ELF machine 0x${machine.toString(16)}, not 0x${want?.toString(16)} (${architecture})`;
  return null;
}

/** Every file under `dir`, as paths relative to it with `/`. */
function filesUnder(dir, base = dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? filesUnder(p, base) : [relative(base, p).split('\\').join('/')];
  });
}

function checks({ project, output }) {
  const vercelJson = readJson(join(project, 'vercel.json'));
  const configPath = join(output, 'config.json');
  const config = existsSync(configPath) ? readJson(configPath) : {};
  const rules = existsSync(join(project, '.vercelignore'))
    ? ignoreRules(readFileSync(join(project, '.vercelignore'), 'utf8'))
    : [];
  const list = [];
  const check = (name, fn) => list.push({ name, fn });

  check('config.json exists with Build Output API version 3', () =>
    config.version === 3 ? null : { expected: `${configPath} with "version": 3`, found: existsSync(configPath) ? `version ${fmt(config.version)}` : 'no such file' });

  // Functions: api/jobs.rs -> functions/api/jobs.func
  for (const [src, settings] of Object.entries(vercelJson.functions ?? {})) {
    const funcRel = `functions/${src.slice(0, -extname(src).length)}.func`;
    const funcDir = join(output, funcRel);
    const vcPath = join(funcDir, '.vc-config.json');
    let vcError = null;
    let vcJson = {};
    try {
      vcJson = readJson(vcPath);
    } catch (err) {
      vcError = existsSync(vcPath) ? String(err.message) : 'no such file';
    }
    const vc = () => vcJson;
    // The handler is in the .func directory, or (`vercel build` outside Vercel) named in
    // filePathMap relative to the project, which `vercel deploy --prebuilt` uploads.
    const handlerPath = () => {
      const { handler, filePathMap = {} } = vc();
      if (existsSync(join(funcDir, handler))) return join(funcDir, handler);
      return filePathMap[handler] ? resolve(project, filePathMap[handler]) : join(funcDir, handler);
    };

    check(`${funcRel}/.vc-config.json exists`, () =>
      vcError ? { expected: `${vcPath} (JSON)`, found: vcError } : null);
    if (vcError) continue;
    check(`${src} is a Rust executable (runtime "executable", runtimeLanguage "rust")`, () => {
      const { runtime, runtimeLanguage, handler } = vc();
      return runtime === 'executable' && runtimeLanguage === 'rust' && typeof handler === 'string'
        ? null
        : { expected: 'runtime "executable", runtimeLanguage "rust", a handler', found: fmt({ runtime, runtimeLanguage, handler }) };
    });
    check(`${src} handler "${vc().handler}" exists`, () =>
      existsSync(handlerPath()) ? null : { expected: handlerPath(), found: 'no such file' });
    check(`${src} handler is an executable ELF for ${vc().architecture ?? 'x86_64'}`, () => {
      if (!existsSync(handlerPath())) return { expected: 'an ELF executable', found: 'no file' };
      const problem = elfProblem(handlerPath(), vc().architecture);
      return problem ? { expected: `${handlerPath()}: an executable ELF`, found: problem } : null;
    });
    check(`${src} files are inside the project and not excluded by .vercelignore`, () => {
      const bad = Object.values(vc().filePathMap ?? {}).flatMap((p) => {
        const r = relative(project, resolve(project, p)).split('\\').join('/');
        if (r.startsWith('..') || isAbsolute(r)) return [`${p}: outside the project`];
        const rule = ignoredBy(rules, r);
        return rule ? [`${p}: ignored by .vercelignore rule "${rule.line}"`] : [];
      });
      return bad.length ? { expected: 'every filePathMap entry uploaded by `vercel deploy --prebuilt`', found: bad.join('; ') } : null;
    });
    for (const key of ['maxDuration', 'memory']) {
      if (!(key in settings)) continue;
      check(`${src} ${key} is ${settings[key]} as in vercel.json`, () =>
        vc()[key] === settings[key] ? null : { expected: `${key}: ${settings[key]}`, found: `${key}: ${fmt(vc()[key])}` });
    }
  }

  // Rewrites: a route whose src matches the source and whose dest is the destination.
  const routes = config.routes ?? [];
  for (const { source, destination } of vercelJson.rewrites ?? []) {
    check(`route rewrites ${source} to ${destination}`, () => {
      const hit = routes.find((r) => r.src && r.dest === destination && new RegExp(r.src).test(source));
      return hit ? null : {
        expected: `a route {src matching "${source}", dest "${destination}"}`,
        found: JSON.stringify(routes.filter((r) => r.src).map(({ src, dest }) => ({ src, dest }))),
      };
    });
    check(`rewrite destination ${destination} exists in the output`, () => {
      const path = destination.split('?')[0];
      const candidates = [join(output, 'functions', `${path}.func`), join(output, 'static', path)];
      return candidates.some((c) => existsSync(c)) ? null : { expected: candidates.join(' or '), found: 'neither exists' };
    });
  }

  // Crons: every cron of vercel.json is in the output, and each runs at most once a day.
  const crons = config.crons ?? [];
  for (const { path, schedule } of vercelJson.crons ?? []) {
    check(`cron ${path} "${schedule}" is in config.json`, () =>
      crons.some((c) => c.path === path && c.schedule === schedule)
        ? null
        : { expected: `{path: "${path}", schedule: "${schedule}"}`, found: JSON.stringify(crons) });
  }
  for (const { path, schedule } of crons) {
    check(`cron ${path} "${schedule}" runs at most once a day (valid on every plan)`, () => {
      const problem = cronProblem(schedule);
      return problem ? { expected: 'a daily schedule such as "0 3 * * *"', found: `"${schedule}": ${problem}` } : null;
    });
  }

  // Headers: each `headers` entry became a route {src, headers, continue: true} (routing-utils'
  // convertHeaders); it covers `/` and every file of public/, and no function path, whose
  // responses are the function's own (docs/spec.md §5).
  const publicDir = join(project, 'public');
  const pagePaths = ['/', ...(existsSync(publicDir) ? filesUnder(publicDir).map((f) => `/${f}`) : [])];
  const functionPaths = Object.keys(vercelJson.functions ?? {}).map((src) => `/${src.slice(0, -extname(src).length)}`);
  for (const { source, headers } of vercelJson.headers ?? []) {
    const wanted = Object.fromEntries(headers.map(({ key, value }) => [key, value]));
    const route = () => routes.find((r) => r.src && r.continue === true && r.headers
      && Object.entries(wanted).every(([key, value]) => r.headers[key] === value));
    check(`headers of ${source} are a route in config.json`, () => (route() ? null : {
      expected: `a route {src, headers: ${JSON.stringify(wanted)}, continue: true}`,
      found: JSON.stringify(routes.filter((r) => r.headers).map(({ src, headers: h }) => ({ src, headers: h }))),
    }));
    check(`headers of ${source} reach every file of public/ and no function`, () => {
      const src = route()?.src;
      if (!src) return { expected: 'the route above', found: 'none' };
      const re = new RegExp(src);
      const missed = pagePaths.filter((p) => !re.test(p));
      const hit = functionPaths.filter((p) => re.test(p));
      return missed.length || hit.length
        ? { expected: `src ${src} matching ${pagePaths.join(', ')} and not ${functionPaths.join(', ')}`, found: `missed ${missed.join(', ') || 'none'}; matched ${hit.join(', ') || 'none'}` }
        : null;
    });
  }

  // Static files: public/ as it is.
  const staticDir = join(output, 'static');
  for (const file of existsSync(publicDir) ? filesUnder(publicDir) : []) {
    check(`static/${file} is public/${file}`, () => {
      const out = join(staticDir, file);
      if (!existsSync(out)) return { expected: out, found: 'no such file' };
      const [a, b] = [readFileSync(join(publicDir, file)), readFileSync(out)];
      return a.equals(b) ? null : { expected: `${a.length} bytes of public/${file}`, found: `${b.length} different bytes` };
    });
  }
  return list;
}

function main(argv) {
  if (argv.includes('--self-test')) return selfTest() ? 0 : 1;
  let project = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  let output = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--project') project = resolve(argv[++i]);
    else output = resolve(argv[i]);
  }
  output ??= join(project, '.vercel', 'output');
  if (!existsSync(output)) {
    console.log(`FAIL no Build Output\n     expected: ${output}\n     found:    no such directory (run scripts/vercel-build)`);
    return 1;
  }
  let failed = 0;
  const list = checks({ project, output });
  for (const { name, fn } of list) {
    let result;
    try {
      result = fn();
    } catch (err) {
      result = { expected: 'no error', found: String(err?.message ?? err) };
    }
    if (result) {
      failed++;
      console.log(`FAIL ${name}\n     expected: ${result.expected}\n     found:    ${result.found}`);
    } else {
      console.log(`ok   ${name}`);
    }
  }
  console.log(`build output checks: ${list.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

// Run when executed (not when imported); realpath, as Node resolves the main module's symlinks.
if (process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))) {
  process.exitCode = main(process.argv.slice(2));
}
