// Rendering: task rows, the failures-by-cause rows, a task's detail, and the bulk summary. Rows
// are keyed (tasks by id, causes by error group) and replaced only when what they show changes,
// so live refresh does not steal keyboard focus, uncheck a box or close an open error history.
// Countdowns are not part of a row's content: `tickCountdowns` rewrites them every second.

const ACTIVE = new Set(['queued', 'processing', 'scheduled']);

const escape = (value) =>
  String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '—');

/** A moment with its date unless it is today; with milliseconds when `precise`. */
function when(iso, { precise = false } = {}) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const clock = date.toLocaleTimeString([], {
    hour: '2-digit', minute: '2-digit', second: '2-digit', ...(precise ? { fractionalSecondDigits: 3 } : {}),
  });
  const today = new Date().toDateString() === date.toDateString();
  return today ? clock : `${date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' })} ${clock}`;
}

const stamp = (iso, options) => (iso ? `<time datetime="${escape(iso)}">${escape(when(iso, options))}</time>` : '—');

const shortId = (taskId) => `…${String(taskId).slice(-8)}`;

export const isActive = (task) => ACTIVE.has(task.status);
export const isFailed = (task) => task.status === 'failed';

/** "in 7 s", "in 2 min 5 s", "in 3 h 10 min", "due now" until `iso`; '' for no date. */
export function countdown(iso, now = Date.now()) {
  const ms = Date.parse(iso) - now;
  if (!Number.isFinite(ms)) return '';
  const s = Math.ceil(ms / 1000);
  if (s <= 0) return 'due now';
  if (s < 60) return `in ${s} s`;
  if (s < 3600) return `in ${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `in ${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Rewrites every countdown under `root` (elements with `data-countdown="<RFC 3339>"`). */
export function tickCountdowns(root, now = Date.now()) {
  for (const element of root.querySelectorAll('[data-countdown]')) {
    const text = countdown(element.dataset.countdown, now);
    const shown = element.dataset.prefix ? `${element.dataset.prefix}${text}` : text;
    if (element.textContent !== shown) element.textContent = shown;
  }
}

const SKIP_REASONS = {
  MAX_RETRIES: 'max retries reached',
  NOT_FAILED: 'no longer failed',
  TASK_NOT_FOUND: 'not found',
  REQUEUE_FAILED: 'could not be queued',
  INVALID_PAYLOAD: 'the corrected payload was refused',
};
const REASON_ORDER = Object.keys(SKIP_REASONS);

/**
 * The toast after a bulk retry: `Retried 37`, `Retried 37, skipped 3: max retries reached`, or
 * with several reasons (most frequent first) `Retried 35, skipped 5: 3 max retries reached, 2 no
 * longer failed`. `skipped` is `[{taskId, code}]` as `retryMany` answers it.
 */
export function retrySummary(retriedCount, skipped) {
  if (skipped.length === 0) return `Retried ${retriedCount}`;
  const counts = new Map();
  for (const { code } of skipped) counts.set(code, (counts.get(code) ?? 0) + 1);
  const rank = (code) => (REASON_ORDER.includes(code) ? REASON_ORDER.indexOf(code) : REASON_ORDER.length);
  const reasons = [...counts].sort(([a, x], [b, y]) => y - x || rank(a) - rank(b) || a.localeCompare(b));
  const reason = (code) => SKIP_REASONS[code] ?? String(code).toLowerCase().replace(/_/g, ' ');
  const detail = reasons.length === 1
    ? reason(reasons[0][0])
    : reasons.map(([code, n]) => `${n} ${reason(code)}`).join(', ');
  return `Retried ${retriedCount}, skipped ${skipped.length}: ${detail}`;
}

function badge(task) {
  const countdownSpan = task.status === 'scheduled' && task.nextAttemptAt
    ? `<span class="countdown" data-countdown="${escape(task.nextAttemptAt)}" data-prefix=" · "></span>`
    : '';
  return `<span class="badge ${escape(task.status)}" data-status>${escape(task.status)}${countdownSpan}</span>`;
}

function autoMarker(task) {
  const policy = task.autoRetry;
  if (!policy) return '';
  const used = Number(task.autoRetries) || 0;
  return `<span class="auto" data-auto title="Automatic retries used: ${used} of ${escape(policy.attempts)}">auto ${used}/${escape(policy.attempts)}</span>`;
}

function actions(task, retrying) {
  const id = escape(task.taskId);
  const details = `<button type="button" class="secondary" data-action="details" aria-haspopup="dialog" aria-label="Details of task ${id}">Details</button>`;
  if (task.status === 'failed') {
    return (retrying
      ? `<button type="button" data-action="retry" disabled aria-busy="true" aria-label="Retrying task ${id}">Retrying...</button>`
      : `<button type="button" data-action="retry" aria-label="Retry task ${id}">Retry</button>`) + details;
  }
  if (isActive(task)) {
    return `<button type="button" class="danger" data-action="cancel" aria-label="Cancel task ${id}">Cancel</button>${details}`;
  }
  return details;
}

function historyItems(entries) {
  return entries
    .slice()
    .reverse()
    .map((e) => `<li>${e.attempt > 0 ? `Attempt ${escape(e.attempt)}` : 'Before its first run'} at ${escape(time(e.at))}: ${escape(e.message)}${e.permanent ? ' (permanent: not retried automatically)' : ''}</li>`)
    .join('');
}

function history(task) {
  const entries = task.errorHistory ?? [];
  if (entries.length === 0) return '';
  return `<details data-history><summary>Error history (${entries.length})</summary><ol>${historyItems(entries)}</ol></details>`;
}

function rowHtml(task, { retrying, selected }) {
  const progress = Math.max(0, Math.min(100, Number(task.progress) || 0));
  const cell = (label, content, extra = '') => `<td data-label="${label}"${extra}><div class="cell">${content}</div></td>`;
  const select = task.status === 'failed'
    ? cell('Select', `<input type="checkbox" data-action="select" aria-label="Select task ${escape(task.taskId)}"${selected ? ' checked' : ''}>`, ' class="select-cell"')
    : '<td data-label="Select" class="select-cell empty"></td>';
  return [
    select,
    cell('Task', `<span class="id" title="${escape(task.taskId)}">${escape(shortId(task.taskId))}</span><button type="button" class="secondary copy" data-action="copy" aria-label="Copy task id ${escape(task.taskId)}">Copy</button>`),
    cell('Type', `${escape(task.type)}${(task.tags ?? []).map((tag) => ` <span class="tag">${escape(tag)}</span>`).join('')}`),
    cell('Status', badge(task)),
    cell('Progress', `<span class="progress" role="progressbar" aria-label="Progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${progress}"><span></span></span> <span data-progress>${progress}%</span>`),
    cell('Retries', `<span data-retries>${escape(task.retryCount)} / ${escape(task.maxRetries)}</span>${autoMarker(task)}`),
    cell('Last error', `<span class="error-text" data-error>${escape(task.lastError ?? '')}</span>${history(task)}`),
    cell('Times', `created ${escape(time(task.createdAt))}<br>updated ${escape(time(task.updatedAt))}`, ' class="times"'),
    cell('Actions', `<div class="actions">${actions(task, retrying)}</div>`),
  ].join('');
}

/**
 * Brings `tbody` in line with `items`: one row per item, keyed by `dataset[keyName]`, its
 * content `htmlOf(item)`, replaced only when that changes (keeping focus by `data-action` and
 * an open `<details>`).
 */
function renderRows(tbody, items, keyName, keyOf, htmlOf, decorate = () => {}) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset[keyName], row]));
  const focused = document.activeElement;
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let row = existing.get(key);
    existing.delete(key);
    const html = htmlOf(item);
    if (!row) {
      row = document.createElement('tr');
      row.dataset[keyName] = key;
    }
    if (row.dataset.html !== html) {
      const refocus = row.contains(focused) ? focused.dataset.action : null;
      const historyOpen = row.querySelector('details[data-history]')?.open ?? false;
      row.innerHTML = html;
      const details = row.querySelector('details[data-history]');
      if (details) details.open = historyOpen;
      row.dataset.html = html;
      decorate(row, item);
      tickCountdowns(row);
      if (refocus) row.querySelector(`[data-action="${refocus}"]`)?.focus();
    }
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (expected !== row) tbody.insertBefore(row, expected);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}

/** Task rows; `retryingIds` show `Retrying...`, `selectedIds` are checked. */
export function renderTasks(tbody, tasks, retryingIds, selectedIds = new Set()) {
  renderRows(
    tbody, tasks, 'taskId', (t) => t.taskId,
    (t) => rowHtml(t, { retrying: retryingIds.has(t.taskId), selected: selectedIds.has(t.taskId) }),
    (row, t) => {
      row.dataset.status = t.status;
      // Through the CSSOM: the Content-Security-Policy refuses style attributes in markup.
      const bar = row.querySelector('[role="progressbar"]');
      if (bar) bar.firstElementChild.style.width = `${bar.getAttribute('aria-valuenow')}%`;
    },
  );
}

function groupRowHtml(group, busy) {
  const cell = (label, content, extra = '') => `<td data-label="${label}"${extra}><div class="cell">${content}</div></td>`;
  const template = escape(group.template);
  const count = escape(group.count);
  const retry = busy
    ? `<button type="button" data-action="retry-group" aria-disabled="true" aria-busy="true" aria-label="${escape(busy)}: failed tasks with cause ${template}">${escape(busy)}</button>`
    : `<button type="button" data-action="retry-group" aria-label="Retry all (${count}) failed tasks with cause ${template}">Retry all (${count})</button>`;
  const fix = busy
    ? ''
    : `<button type="button" class="secondary" data-action="fix-group" aria-haspopup="dialog" aria-label="Fix and retry all (${count}) failed tasks with cause ${template}">Fix and retry all (${count})</button>`;
  const example = group.exampleTaskId
    ? `<button type="button" class="secondary" data-action="example" aria-haspopup="dialog" aria-label="Example: a task with cause ${template}">Example</button>`
    : '';
  return [
    cell('Cause', `<span class="template" data-template>${template}</span>`),
    cell('Failed', `<span data-count>${count}</span>`),
    cell('Last seen', stamp(group.lastAt)),
    cell('Actions', `<div class="actions">${retry}${fix}${example}</div>`),
  ].join('');
}

/** The failures-by-cause rows; `busy` is `{errorGroup, label}` while one is being retried. */
export function renderGroups(tbody, groups, busy) {
  renderRows(
    tbody, groups, 'errorGroup', (g) => g.errorGroup,
    (g) => groupRowHtml(g, busy?.errorGroup === g.errorGroup ? busy.label : null),
    (row, g) => { row.dataset.count = g.count; },
  );
}

const json = (value) => `<pre class="json">${escape(JSON.stringify(value, null, 2))}</pre>`;

function policyText(task) {
  const p = task.autoRetry;
  if (!p) return 'Off';
  const used = Number(task.autoRetries) || 0;
  const backoff = p.backoff === 'fixed'
    ? `every ${escape(p.delaySeconds)} s`
    : `from ${escape(p.delaySeconds)} s, doubling up to ${escape(p.maxDelaySeconds ?? '?')} s`;
  return `${used} of ${escape(p.attempts)} used; ${escape(p.backoff ?? 'exponential')} backoff ${backoff}`;
}

function timeline(events) {
  if (!Array.isArray(events) || events.length === 0) return '<p class="hint">No timeline was recorded for this task.</p>';
  const rows = events.map((e) => `<tr data-kind="${escape(e.kind)}">
      <td data-label="Time">${stamp(e.at, { precise: true })}</td>
      <td data-label="Event"><span class="kind" data-event-kind>${escape(e.kind)}</span></td>
      <td data-label="By" data-by>${escape(e.by)}</td>
      <td data-label="Attempt">${e.attempt === undefined || e.attempt === null ? '' : escape(e.attempt)}</td>
      <td data-label="Message" class="message">${escape([e.step, e.message].filter(Boolean).join(': '))}</td>
    </tr>`).join('');
  return `<table class="events timeline" aria-labelledby="detail-timeline"><thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">By</th><th scope="col">Attempt</th><th scope="col">Message</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/**
 * A task's memoised steps (docs/spec.md §16) for its detail: each stored step done or failed,
 * with its attempt, duration and output; for `demo`, whose steps are `step-1` … `step-<steps>`,
 * the ones after them as not reached.
 */
export function stepRows(task) {
  const stored = Array.isArray(task.steps) ? task.steps : [];
  const rows = stored.map((s, i) => ({
    number: i + 1, name: s.name, state: s.status === 'completed' ? 'done' : 'failed',
    attempt: s.attempt, durationMs: s.durationMs, output: s.output, error: s.error,
  }));
  const total = task.type === 'demo' ? Number(task.payload?.steps ?? 5) : 0;
  for (let k = rows.length + 1; Number.isInteger(total) && k <= Math.min(total, 100); k += 1) {
    rows.push({ number: k, name: `step-${k}`, state: 'not reached' });
  }
  return rows;
}

/** Where a retry of `task` would resume: the number of its first step not done, or null. */
export function resumeStep(task) {
  const stored = Array.isArray(task.steps) ? task.steps : [];
  if (!stored.some((s) => s.status === 'completed')) return null;
  const next = stored.findIndex((s) => s.status !== 'completed');
  return next === -1 ? stored.length + 1 : next + 1;
}

function stepsSection(task) {
  const rows = stepRows(task);
  if (rows.length === 0) return '<p class="hint">This task records no steps.</p>';
  const body = rows.map((r) => `<tr data-step="${escape(r.name)}" data-step-state="${escape(r.state)}">
      <td data-label="Step">${escape(r.number)}. <span class="id">${escape(r.name)}</span></td>
      <td data-label="State"><span class="kind">${escape(r.state)}</span></td>
      <td data-label="Attempt">${r.attempt === undefined ? '' : escape(r.attempt)}</td>
      <td data-label="Duration">${r.durationMs === undefined ? '' : `${escape(r.durationMs)} ms`}</td>
      <td data-label="Output" class="message">${r.error ? `<span class="error-text">${escape(r.error)}</span>` : ''}${r.output === undefined ? '' : `<code>${escape(JSON.stringify(r.output))}</code>`}</td>
    </tr>`).join('');
  return `<table class="events steps" aria-labelledby="detail-steps"><thead><tr><th scope="col">Step</th><th scope="col">State</th><th scope="col">Attempt</th><th scope="col">Duration</th><th scope="col">Output</th></tr></thead><tbody>${body}</tbody></table>`;
}

/**
 * The changes from `before` to `after`, two JSON values: `[{op: 'add'|'remove'|'replace', path,
 * from?, value?}]`, objects compared key by key, anything else as a whole.
 */
export function payloadDiff(before, after, path = '') {
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys.flatMap((key) => {
      const at = `${path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (!(key in after)) return [{ op: 'remove', path: at, from: before[key] }];
      if (!(key in before)) return [{ op: 'add', path: at, value: after[key] }];
      return payloadDiff(before[key], after[key], at);
    });
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ op: 'replace', path: path || '/', from: before, value: after }];
}

/** A dry run's answer (docs/spec.md §17) as the fix dialog's preview. */
export function dryRunHtml(reply) {
  const would = reply.dryRun?.wouldRetry ?? 0;
  const skipped = reply.skipped ?? [];
  const more = reply.nextCursor ? ' (of the first page; the rest are checked as they are retried)' : '';
  const skips = skipped.length
    ? `<ul class="changes">${skipped.slice(0, 10).map((s) => `<li data-skip="${escape(s.code)}"><span class="id">${escape(shortId(s.taskId))}</span>: ${escape(s.message ?? s.code)}</li>`).join('')}${skipped.length > 10 ? `<li>and ${skipped.length - 10} more</li>` : ''}</ul>`
    : '';
  const examples = (reply.dryRun?.examples ?? []).map((e) => `<li>Task <span class="id">${escape(shortId(e.taskId))}</span>: ${changesHtml(e.changes ?? [])}</li>`).join('');
  return `<p data-would-retry="${escape(would)}"><strong>Would retry ${escape(would)}</strong>, skip ${escape(skipped.length)}${escape(more)}.</p>
    ${skips}
    ${examples ? `<h3 id="fixer-examples">Example changes</h3><ul class="changes examples" aria-labelledby="fixer-examples">${examples}</ul>` : ''}`;
}

/** A list of changes (ours, or an RFC 6902 patch from the API) as readable lines. */
export function changesHtml(changes) {
  if (!changes.length) return '<p class="hint">No changes.</p>';
  const show = (value) => `<code>${escape(JSON.stringify(value))}</code>`;
  const line = (c) => {
    if (c.op === 'add') return `added <span class="id">${escape(c.path)}</span>: ${show(c.value)}`;
    if (c.op === 'remove') return `removed <span class="id">${escape(c.path)}</span>${c.from === undefined ? '' : ` (was ${show(c.from)})`}`;
    if (c.op === 'replace') return `changed <span class="id">${escape(c.path)}</span>${c.from === undefined ? '' : `: ${show(c.from)} →`} ${show(c.value)}`;
    return `${escape(c.op)} <span class="id">${escape(c.path)}</span>`;
  };
  return `<ul class="changes">${changes.map((c) => `<li data-op="${escape(c.op)}">${line(c)}</li>`).join('')}</ul>`;
}

function versionsSection(task) {
  const history = Array.isArray(task.payloadHistory) ? task.payloadHistory : [];
  const base = task.payloadBaseVersion ?? task.payloadVersion ?? 1;
  const first = base > 1
    ? `<li>Version ${escape(base)}: kept whole; ${base === 2 ? 'version 1 was' : `versions 1 to ${escape(base - 1)} were`} folded into it.</li>`
    : '<li>Version 1: as created.</li>';
  const items = history.map((c) => `<li data-version="${escape(c.version)}">Version ${escape(c.version)} by ${escape(c.by)} at ${stamp(c.at)}: ${changesHtml(c.patch ?? [])}</li>`).join('');
  return `<ol class="versions" aria-labelledby="detail-versions">${first}${items}</ol>`;
}

/** The retry choices of a failed task in its detail: from the failed step, or from the start. */
function retryChoices(task) {
  if (task.status !== 'failed' || (task.retryCount ?? 0) >= (task.maxRetries ?? 0)) return '';
  const edit = task.type === 'webhook'
    ? '<p class="hint">A webhook\'s headers are shown redacted, so its payload is edited through the API.</p>'
    : '<button type="button" data-action="edit" class="secondary">Edit and retry</button>';
  const at = resumeStep(task);
  if (at === null) {
    return `<div class="detail-actions"><button type="button" data-action="retry-from" data-from="failedStep">Retry</button>${edit}</div>`;
  }
  const kept = at - 1;
  return `<div class="detail-actions">
      <button type="button" data-action="retry-from" data-from="failedStep">Retry from step ${escape(at)}</button>
      <button type="button" data-action="retry-from" data-from="start" class="secondary">Restart from the beginning</button>
      ${edit}
      <p class="hint">Retry from step ${escape(at)} keeps the ${kept === 1 ? 'output of step 1' : `outputs of steps 1–${escape(kept)}`} and does not run ${kept === 1 ? 'it' : 'them'} again; restarting discards them and runs every step.</p>
    </div>`;
}

/** The body of a task's detail dialog: facts, timeline (oldest first), errors, payload, result. */
export function detailHtml(task) {
  const fact = (term, value) => `<dt>${term}</dt><dd>${value}</dd>`;
  const progress = Math.max(0, Math.min(100, Number(task.progress) || 0));
  const next = task.nextAttemptAt
    ? `${stamp(task.nextAttemptAt)} (<span data-countdown="${escape(task.nextAttemptAt)}"></span>)`
    : '—';
  const errors = task.errorHistory ?? [];
  return `
    <dl class="facts">
      ${fact('Task id', `<span class="id">${escape(task.taskId)}</span>`)}
      ${fact('Type', escape(task.type))}
      ${fact('Status', badge(task))}
      ${fact('Progress', `${progress}%`)}
      ${fact('Attempts', escape(task.attempts ?? 0))}
      ${fact('Manual retries', `${escape(task.retryCount)} / ${escape(task.maxRetries)}`)}
      ${fact('Automatic retries', policyText(task))}
      ${fact('Next attempt', next)}
      ${task.lastError && task.errorTemplate ? fact('Cause', `<span class="template">${escape(task.errorTemplate)}</span>`) : ''}
      ${task.lastError ? fact('Last error', `<span class="error-text">${escape(task.lastError)}</span>`) : ''}
      ${fact('Created', stamp(task.createdAt))}
      ${fact('Started', stamp(task.startedAt))}
      ${fact('Finished', stamp(task.finishedAt))}
    </dl>
    ${retryChoices(task)}
    <h3 id="detail-versions">Payload versions (now ${escape(task.payloadVersion ?? 1)})</h3>
    ${versionsSection(task)}
    <h3 id="detail-steps">Steps</h3>
    ${stepsSection(task)}
    <h3 id="detail-timeline">Timeline</h3>
    ${timeline(task.events)}
    <h3>Error history</h3>
    ${errors.length ? `<ol class="errors">${historyItems(errors)}</ol>` : '<p class="hint">No failures.</p>'}
    <h3>Payload</h3>
    ${task.payload === undefined ? '<p class="hint">Not shown.</p>' : json(task.payload)}
    <h3>Result</h3>
    ${task.result === undefined || task.result === null ? '<p class="hint">No result.</p>' : json(task.result)}`;
}

export const detailTitle = (task) => `${task?.type ? `${task.type} task` : 'Task'} ${shortId(task?.taskId ?? '')}`;
