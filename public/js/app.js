// The Task Manager page: the user's tasks, one-click retry, cancel, bulk retry (selected rows, or
// every failed task of a cause), failures by cause, a task's detail with its timeline, a demo
// task form with optional automatic retries, and live refresh while anything is queued,
// processing or scheduled (paused while the tab is hidden). A refresh costs the API little: the
// list is asked with its ETag (a 304 changes nothing on the page), and failures by cause only
// after the page changed something and on the idle interval. A sign-in link that cannot be used
// (malformed or expired token, or one the API answers 401) is a message saying what to do, and
// nothing polls until the user acts.

import {
  api, hasIdentity, identity, newIdempotencyKey, onUnauthenticated, rememberUser, tokenProblem,
} from './api.js';
import {
  changesHtml, detailHtml, detailTitle, dryRunHtml, isActive, isFailed, payloadDiff, renderGroups, renderTasks,
  resumeStep, retrySummary, tickCountdowns,
} from './view.js';
import { LiveUpdates } from './live.js';
import { matchesSearch, parseSearch } from './search.js';
import { chartTable, drawChart } from './chart.js';

const LIVE_INTERVAL_MS = 1000;
const IDLE_INTERVAL_MS = 10000;
const RETRY_LOAD_MS = 2000;
const PAGE_SIZE = 20;
/**
 * Tasks per `retryMany` call the page asks for: the API takes up to 1,000, the page takes 100
 * so its progress ("Retrying… 300 of 10,000") moves several times a second.
 */
const BULK_BATCH = 100;

const $ = (selector) => document.querySelector(selector);
const state = {
  tasks: [],
  nextCursor: null,
  status: '',
  retrying: new Set(),
  selected: new Set(),
  groups: [],
  // `groups` is asked for again when stale (at start, after anything the page changed, another
  // user) or IDLE_INTERVAL_MS after it was last asked for; not on every live refresh.
  groupsStale: true,
  groupsAskedAt: 0,
  // The ETag of the first page shown (the last full list answer applied), sent back as
  // If-None-Match; null when the page must ask for the list in full.
  listTag: null,
  // Set false when the API does not know `groups` (an older deployment): the panel stays hidden.
  groupsSupported: true,
  // A bulk retry in flight: {kind: 'selected'|'group', errorGroup?, done, total}.
  bulk: null,
  // The open detail: {taskId, task, html, opener: {selector, fallback}}.
  detail: null,
  timer: null,
  // Responses to list requests sent before this moment are stale (see `retry`).
  freshSince: 0,
  // Set when the sign-in cannot be used: the page shows why and calls the API no more.
  signedOut: false,
  // How changes reach the page: 'connecting', 'push' (the `watch` stream) or 'poll' (`list`
  // on a timer), and why it polls.
  live: { mode: 'connecting', reason: '' },
  // The latest pushed summary of each task and when it arrived (`performance.now()`), kept even
  // when the row left the page: a list asked for before then does not know it yet.
  pushed: new Map(),
  // The last list failed: pushed changes alone cannot bring the rows back, so it is asked again.
  loadFailed: false,
  // The search box's terms (`?q=`) and the `list` parameters they ask for (docs/spec.md §19).
  query: '',
  search: {},
  // The last page answered stopped at the search's window of examined tasks.
  windowEnded: false,
};

/** `?live=poll` keeps the page on polling (a proxy known to buffer streams; the polling tests). */
const POLL_ONLY = new URLSearchParams(location.search).get('live') === 'poll';

const AGAIN = 'Open the Task Manager again from the application that sent you here; it signs you in with a new link.';
const SIGN_IN_MESSAGES = {
  malformed: `This sign-in link is invalid: its token is not a well-formed JWT. ${AGAIN}`,
  expired: `This sign-in link has expired. ${AGAIN}`,
};

/**
 * Stops every refresh and shows why the page cannot act for anyone. It stays so until the user
 * acts: opens a new sign-in link, or (without a token) enters a user id.
 */
function signOut(message) {
  state.signedOut = true;
  clearTimeout(state.timer);
  liveUpdates.stop();
  if ($('#detail').open) $('#detail').close();
  $('#signin-text').textContent = message;
  $('#signin').hidden = false;
  for (const panel of ['#create-panel', '#groups', '#chart-panel', '#tasks-panel']) $(panel).hidden = true;
  if (identity().token) $('#signed-in').textContent = 'Not signed in';
}

function signBackIn() {
  if (!state.signedOut) return;
  state.signedOut = false;
  $('#signin').hidden = true;
  $('#create-panel').hidden = false;
  $('#tasks-panel').hidden = false;
}

function toast(message, kind = 'error') {
  if (state.signedOut) return; // the sign-in message says it already
  const item = document.createElement('div');
  item.className = `toast ${kind}`;
  item.textContent = message;
  $('#toasts').append(item);
  setTimeout(() => item.remove(), 6000);
}

function showState(message, isError = false) {
  const line = $('#state');
  line.textContent = message;
  line.classList.toggle('error', isError);
  line.hidden = !message;
}

const bulkLabel = (bulk) => `Retrying… ${bulk.done} of ${Math.max(bulk.total, bulk.done)}`;

function renderSelection() {
  const failed = state.tasks.filter(isFailed);
  const failedIds = new Set(failed.map((t) => t.taskId));
  for (const id of state.selected) if (!failedIds.has(id)) state.selected.delete(id);
  const n = state.selected.size;
  $('#bulk').hidden = failed.length === 0 && state.bulk?.kind !== 'selected';
  const all = $('#select-all');
  all.checked = failed.length > 0 && n === failed.length;
  all.indeterminate = n > 0 && n < failed.length;
  all.disabled = failed.length === 0;
  const button = $('#retry-selected');
  if (state.bulk?.kind === 'selected') {
    button.textContent = bulkLabel(state.bulk);
    button.disabled = false;
    button.setAttribute('aria-disabled', 'true');
    button.setAttribute('aria-busy', 'true');
  } else {
    button.textContent = `Retry selected (${n})`;
    button.disabled = n === 0;
    button.toggleAttribute('aria-disabled', Boolean(state.bulk));
    button.removeAttribute('aria-busy');
  }
}

function renderGroupsPanel() {
  const busy = state.bulk?.kind === 'group' ? { errorGroup: state.bulk.errorGroup, label: bulkLabel(state.bulk) } : null;
  renderGroups($('#groups tbody'), state.groups, busy);
  $('#groups').hidden = state.groups.length === 0 && !busy;
}

function render() {
  if (state.signedOut) return;
  renderTasks($('#tasks tbody'), state.tasks, state.retrying, state.selected);
  $('#tasks').hidden = state.tasks.length === 0;
  $('#more').hidden = !state.nextCursor;
  const searching = Object.keys(state.search).length > 0;
  if (state.tasks.length === 0 && searching) {
    showState(state.windowEnded
      ? 'No match among the 5,000 newest tasks searched. Load more to search older ones.'
      : 'No task matches this search.');
  } else if (state.tasks.length === 0) {
    showState(state.status ? `No ${state.status} tasks.` : 'No tasks yet. Create a demo task above to see one run.');
  } else {
    showState(state.windowEnded ? 'Searched the 5,000 newest tasks: Load more searches older ones.' : '');
  }
  $('#more').textContent = state.windowEnded ? 'Search older tasks' : 'Load more';
  renderSelection();
  renderGroupsPanel();
  renderLiveMode();
}

/** Says how the page gets changes: pushed, or polled (and why). */
function renderLiveMode() {
  const { mode, reason } = state.live;
  const indicator = $('#live');
  indicator.dataset.mode = mode;
  const busy = state.tasks.some(isActive);
  indicator.textContent = mode === 'push'
    ? 'Live: changes are pushed'
    : mode === 'poll'
      ? `Polling every ${busy ? LIVE_INTERVAL_MS / 1000 : IDLE_INTERVAL_MS / 1000} s`
      : 'Connecting…';
  indicator.title = mode === 'poll' && reason ? `Live push is off: ${reason}` : '';
}

const liveUpdates = new LiveUpdates({
  mode(mode, reason = '') {
    state.live = { mode, reason };
    renderLiveMode();
    // Pushed changes replace the timer; polling takes over when the stream cannot be used.
    schedule();
  },
  sync() {
    load().then(schedule);
  },
  task: applyChange,
  unauthenticated(message) {
    signOut(identity().token
      ? `The jobs API refused this sign-in link (${message}). ${AGAIN}`
      : `The jobs API needs a sign-in link (${message}). ${AGAIN}`);
  },
});

/** A task as `watch` pushed it: its row updated, added (newest first) or dropped by the filter. */
function applyChange(task) {
  if (state.signedOut) return;
  const at = state.tasks.findIndex((t) => t.taskId === task.taskId);
  const before = at >= 0 ? state.tasks[at] : null;
  // Pushed changes come in the stream's order, the truth whatever the servers' clocks say.
  state.pushed.set(task.taskId, { task, at: performance.now() });
  // Nothing a row shows changed (a lease renewal): nothing to do.
  if (before && JSON.stringify(before) === JSON.stringify(task)) return;
  const shown = isShown(task, Boolean(before));
  if (before && shown) state.tasks[at] = task;
  else if (before) state.tasks.splice(at, 1);
  else if (shown) {
    const last = state.tasks[state.tasks.length - 1];
    // A task older than the last row shown belongs to a page not loaded yet.
    if (!last || !state.nextCursor || Date.parse(task.createdAt) >= Date.parse(last.createdAt)) {
      state.tasks = sortNewestFirst(state.tasks.concat(task));
    }
  }
  // The first page held is no longer the one its ETag names.
  state.listTag = null;
  if ((before?.status === 'failed') !== (task.status === 'failed')) refreshGroupsSoon();
  if (state.detail?.taskId === task.taskId) refreshDetail();
  render();
}

/** Tasks in `list`'s order: newest first, then the greater id. */
function sortNewestFirst(tasks) {
  return tasks.sort((a, b) => (Date.parse(b.createdAt) - Date.parse(a.createdAt))
    || (a.taskId < b.taskId ? 1 : a.taskId > b.taskId ? -1 : 0));
}

/**
 * Whether a task belongs on the page: its status filter, and the search as far as the page can
 * judge it (payload fields are not pushed: a row already shown stays, a new one waits for a list).
 */
function isShown(task, alreadyShown) {
  const matches = matchesSearch(task, state.search);
  return (!state.status || task.status === state.status) && (matches || (alreadyShown && matches === null));
}

/**
 * A list page asked for at `startedAt`, with what was pushed since: each task as pushed when the
 * push arrived after the list was asked for (the list could not know it), then the filter; and
 * the tasks pushed since that the list could not hold yet, newest first.
 */
function withLaterPushes(tasks, startedAt) {
  const now = performance.now();
  for (const [id, { at }] of state.pushed) if (now - at > 600000) state.pushed.delete(id);
  const later = (id) => {
    const pushed = state.pushed.get(id);
    return pushed && pushed.at >= startedAt ? pushed.task : null;
  };
  const listed = new Set(tasks.map((t) => t.taskId));
  const merged = tasks.map((t) => later(t.taskId) ?? t).filter((t) => isShown(t, true));
  const oldest = tasks.length ? Date.parse(tasks[tasks.length - 1].createdAt) : -Infinity;
  const added = [...state.pushed.values()]
    .filter(({ task, at }) => at >= startedAt && !listed.has(task.taskId) && isShown(task, false)
      && Date.parse(task.createdAt) >= oldest);
  return sortNewestFirst(merged.concat(added.map(({ task }) => task)));
}

/** Failures by cause again, at most once a second however many changes arrive. */
function refreshGroupsSoon() {
  state.groupsStale = true;
  if (state.groupsTimer) return;
  state.groupsTimer = setTimeout(async () => {
    state.groupsTimer = null;
    if (!takeGroupsTurn()) return;
    const fresh = await loadGroups();
    if (fresh) {
      state.groups = fresh;
      renderGroupsPanel();
    }
  }, 1000);
}

/** After the page changed tasks (or tried to): list answers sent before now are stale, groups too. */
function changed() {
  state.freshSince = performance.now();
  state.groupsStale = true;
}

/** Whether this refresh asks for `groups`; if so, it counts as asked. */
function takeGroupsTurn() {
  const now = performance.now();
  if (!state.groupsStale && now - state.groupsAskedAt < IDLE_INTERVAL_MS) return false;
  state.groupsStale = false;
  state.groupsAskedAt = now;
  return true;
}

/** The chart counts whole hours: asked again at most this often, whatever moves. */
const CHART_EVERY_MS = 30000;

/** "Failures over time": asked for with the failures by cause (at most every 30 s), drawn, its
 * table filled. */
async function loadChart() {
  if (Date.now() - (state.chartAskedAt ?? -Infinity) < CHART_EVERY_MS) return;
  state.chartAskedAt = Date.now();
  let data;
  try {
    data = await api.failures();
  } catch {
    return; // an older deployment, or a passing error: the panel stays as it was
  }
  const panel = $('#chart-panel');
  const caption = $('#chart-table caption').outerHTML;
  $('#chart-table').innerHTML = caption + chartTable(data);
  panel.hidden = false;
  const drawn = drawChart($('#chart'), data, Math.max(280, $('#chart').clientWidth || panel.clientWidth - 32));
  panel.hidden = !drawn;
}

async function loadGroups() {
  if (!state.groupsSupported) return null;
  loadChart();
  try {
    return (await api.groups('failed')).groups ?? [];
  } catch (error) {
    if (error.code === 'UNKNOWN_ACTION') state.groupsSupported = false;
    return null;
  }
}

async function refreshDetail() {
  const detail = state.detail;
  if (!detail) return;
  try {
    const { task } = await api.get(detail.taskId);
    if (state.detail === detail) showDetail(task);
  } catch (error) {
    if (state.detail === detail && !detail.task) {
      $('#detail-body').innerHTML = '';
      const message = document.createElement('p');
      message.className = 'state error';
      message.textContent = `Could not load the task: ${error.message}`;
      $('#detail-body').append(message);
    }
  }
}

async function load({ append = false } = {}) {
  if (state.signedOut) return;
  if (!hasIdentity()) {
    state.tasks = [];
    state.groups = [];
    state.listTag = null;
    showState('Enter a user id to see its tasks.');
    $('#tasks').hidden = true;
    $('#groups').hidden = true;
    $('#bulk').hidden = true;
    return;
  }
  const startedAt = performance.now();
  const groups = !append && takeGroupsTurn() ? loadGroups() : Promise.resolve(null);
  if (!append) refreshDetail();
  try {
    const page = await api.list({
      ...state.search,
      status: state.status,
      limit: PAGE_SIZE,
      cursor: append ? state.nextCursor : undefined,
    }, append ? null : state.listTag);
    const fresh = await groups;
    if (startedAt < state.freshSince) return;
    if (fresh) state.groups = fresh;
    if (page.notModified) {
      // The first page is as shown: rows, focus and checkboxes stay as they are.
      if (fresh) renderGroupsPanel();
      return;
    }
    if (!append) state.listTag = page.etag ?? null;
    state.loadFailed = false;
    if (append) {
      const held = new Set(state.tasks.map((t) => t.taskId));
      state.tasks = state.tasks.concat(withLaterPushes(page.tasks, startedAt).filter((t) => !held.has(t.taskId)));
    } else {
      // Keep pages the user loaded beyond the first: replace only what the first page covers.
      const first = withLaterPushes(page.tasks, startedAt);
      const fresh = new Set(first.map((t) => t.taskId));
      const rest = state.tasks.slice(PAGE_SIZE).filter((t) => !fresh.has(t.taskId));
      state.tasks = first.concat(rest);
      if (rest.length === 0) state.nextCursor = page.nextCursor;
    }
    if (append) state.nextCursor = page.nextCursor;
    state.windowEnded = Boolean(page.windowEnded);
    render();
  } catch (error) {
    if (state.signedOut) return;
    // The error replaces the list on screen: the next answer must be in full to show it again.
    state.listTag = null;
    state.loadFailed = true;
    showState(error.code === 'DB_UNAVAILABLE'
      ? 'The task database is unavailable. Retrying automatically…'
      : error.code === 'DB_TIMEOUT'
        ? `${error.message}. Retrying automatically…`
        : `Could not load tasks: ${error.message}`, true);
  }
}

function schedule() {
  clearTimeout(state.timer);
  // Pushed: every change arrives as it happens; nothing to poll, unless the list itself failed.
  if (document.hidden || state.signedOut) return;
  if (state.live.mode === 'push' && !state.loadFailed) return;
  const busy = state.tasks.some(isActive) || state.retrying.size > 0 || Boolean(state.bulk)
    || Boolean(state.detail?.task && isActive(state.detail.task));
  // A list that failed is asked again soon, pushed or polled.
  const wait = state.loadFailed ? RETRY_LOAD_MS : busy ? LIVE_INTERVAL_MS : IDLE_INTERVAL_MS;
  state.timer = setTimeout(async () => {
    await load();
    schedule();
  }, wait);
}

function updateTask(taskId, changes) {
  state.tasks = state.tasks.map((t) => (t.taskId === taskId ? { ...t, ...changes } : t));
}

/**
 * What a retry changes at once, before the next refresh confirms it; nothing when newer news of
 * the task came meanwhile (pushed changes can outrun the retry's own answer).
 */
function markRequeued(taskId) {
  const task = state.tasks.find((t) => t.taskId === taskId);
  if (!task || task.status !== 'failed') return;
  updateTask(taskId, {
    status: 'queued',
    progress: 0,
    lastError: null,
    retryCount: (task.retryCount ?? 0) + 1,
    // A manual retry gives the task a fresh automatic budget (docs/spec.md §12).
    ...(task.autoRetry ? { autoRetries: 0, nextAttemptAt: null } : {}),
  });
}

/** Retries `taskId`; `from` (`failedStep` or `start`, docs/spec.md §16) only from its detail. */
async function retry(taskId, from) {
  if (state.retrying.has(taskId)) return;
  state.retrying.add(taskId);
  render();
  try {
    const result = await api.retry(taskId, from);
    if (result.success) {
      markRequeued(taskId);
      toast('Task re-queued.', 'success');
    }
  } catch (error) {
    toast(error.message || 'Failed to retry task.');
  } finally {
    changed();
    state.retrying.delete(taskId);
    render();
    schedule();
    if (state.detail?.taskId === taskId) refreshDetail();
  }
}

async function cancel(taskId) {
  try {
    await api.cancel(taskId);
    updateTask(taskId, { status: 'cancelled' });
    changed();
    render();
  } catch (error) {
    changed();
    toast(error.message || 'Failed to cancel task.');
  }
  schedule();
}

async function copyId(taskId, button) {
  try {
    await navigator.clipboard.writeText(taskId);
    button.textContent = 'Copied';
  } catch {
    window.prompt('Copy the task id:', taskId);
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

/**
 * The confirmation's openings not yet answered, oldest first. The browser dispatches `close`
 * after the dialog closed, possibly once it was opened again, so each `close` answers the oldest
 * opening, with the choice recorded when it was made (the form's submit; Escape records nothing).
 */
const confirmations = [];

/**
 * Asks before a bulk retry; resolves true only when the user confirms (Escape cancels). Focus
 * goes back to `opener` (a selector: its row may have been redrawn meanwhile).
 */
function confirmRetry(count, cause, opener) {
  const dialog = $('#confirm');
  const tasks = `${count} failed task${count === 1 ? '' : 's'}`;
  $('#confirm-title').textContent = `Retry ${tasks}?`;
  $('#confirm-text').textContent = cause
    ? `Every failed task whose error is “${cause}” is queued again, 100 at a time.`
    : 'The selected tasks are queued again.';
  $('#confirm-note').textContent = 'Each retry counts against that task\'s own retry limit; a task at its limit, or no longer failed, is skipped.';
  $('#confirm-ok').textContent = `Retry ${count}`;
  return new Promise((resolve) => {
    confirmations.push({
      confirmed: false,
      answer(confirmed) {
        keepFocus(opener);
        resolve(confirmed);
      },
    });
    dialog.showModal();
    $('#confirm-ok').focus();
  });
}

/** Keeps keyboard focus somewhere useful when the element that had it went away or was disabled. */
function keepFocus(...candidates) {
  const current = document.activeElement;
  if (current && current !== document.body && current.isConnected && !current.disabled) return;
  for (const candidate of candidates) {
    const element = typeof candidate === 'string' ? $(candidate) : candidate;
    if (element?.isConnected && !element.disabled && !element.closest('[hidden]')) {
      element.focus();
      return;
    }
  }
}

function showProgress(target) {
  $(target).textContent = state.bulk ? bulkLabel(state.bulk) : '';
}

/**
 * Runs a bulk retry call after call: `nextBody(reply)` gives the next body (`null` when done),
 * the first time with no reply. Shows progress, updates the rows it retried, ends with the
 * summary toast.
 */
async function runBulk(bulk, statusTarget, nextBody) {
  state.bulk = { ...bulk, done: 0 };
  showProgress(statusTarget);
  render();
  const retried = [];
  const skipped = [];
  let failure = null;
  try {
    let reply = null;
    for (let body = nextBody(null); body; body = nextBody(reply)) {
      reply = await api.retryMany(body);
      retried.push(...(reply.retried ?? []));
      skipped.push(...(reply.skipped ?? []));
      state.bulk.done = retried.length + skipped.length;
      for (const taskId of reply.retried ?? []) markRequeued(taskId);
      changed();
      showProgress(statusTarget);
      render();
    }
  } catch (error) {
    failure = error;
  }
  changed();
  state.bulk = null;
  showProgress(statusTarget);
  const summary = retrySummary(retried.length, skipped);
  if (failure) {
    toast(retried.length + skipped.length > 0 ? `${summary}; then stopped: ${failure.message}` : failure.message);
  } else {
    toast(summary, skipped.length === 0 ? 'success' : 'info');
  }
  render();
  await load();
  schedule();
}

async function retrySelected() {
  if (state.bulk) return;
  const ids = [...state.selected];
  if (ids.length === 0) return;
  if (!(await confirmRetry(ids.length, null, '#retry-selected'))) return;
  state.selected.clear();
  let offset = 0;
  await runBulk({ kind: 'selected', total: ids.length }, '#selection-status', () => {
    const taskIds = ids.slice(offset, offset + BULK_BATCH);
    offset += BULK_BATCH;
    return taskIds.length ? { taskIds } : null;
  });
  keepFocus('#select-all', '#tasks-title');
}

async function retryGroup(errorGroup) {
  if (state.bulk) return;
  const group = state.groups.find((g) => g.errorGroup === errorGroup);
  if (!group) return;
  const opener = `#groups tr[data-error-group="${CSS.escape(errorGroup)}"] [data-action="retry-group"]`;
  if (!(await confirmRetry(group.count, group.template, opener))) return;
  const seen = new Set();
  await runBulk({ kind: 'group', errorGroup, total: group.count }, '#groups-status', (reply) => {
    if (!reply) return { filter: { errorGroup }, limit: BULK_BATCH };
    // Follow nextCursor while it is set; a cursor seen before would loop forever.
    if (!reply.nextCursor || seen.has(reply.nextCursor)) return null;
    seen.add(reply.nextCursor);
    return { filter: { errorGroup }, cursor: reply.nextCursor, limit: BULK_BATCH };
  });
  keepFocus(opener, '#groups-title', '#tasks-title');
}

function showDetail(task) {
  const detail = state.detail;
  const html = detailHtml(task);
  detail.task = task;
  $('#detail-title').textContent = detailTitle(task);
  if (detail.html !== html) {
    detail.html = html;
    $('#detail-body').innerHTML = html;
  }
  tickCountdowns($('#detail'));
}

/**
 * "Edit and retry" (docs/spec.md §17): the payload in an editor that checks JSON as it is typed,
 * the changes against the version it was opened on, then a retry with the new version, made
 * from that version (`expectedVersion`). The server's refusal is shown next to the field.
 */
const editor = { task: null, parsed: undefined };

function openEditor(task) {
  if (hasUnsafeNumber(task.payload)) {
    toast('This payload holds integers too large for the page to edit exactly: edit it through the API.');
    return;
  }
  editor.task = task;
  editor.parsed = task.payload;
  $('#editor-title').textContent = `Edit and retry ${detailTitle(task)}`;
  $('#editor-version').textContent = `Editing version ${task.payloadVersion ?? 1}; the retry stores your payload as version ${(task.payloadVersion ?? 1) + 1}.`;
  $('#editor-base').textContent = String(task.payloadVersion ?? 1);
  $('#editor-payload').value = JSON.stringify(task.payload ?? {}, null, 2);
  const at = resumeStep(task);
  // (No "steps" in these labels: the create form's "Steps" field is found by its label.)
  $('#editor-keeps').textContent = at === null
    ? 'no step has completed, so nothing is kept'
    : `keeps what ${at === 2 ? 'the completed step' : `the ${at - 1} completed ones`} produced from the old payload`;
  $('#editor-from').querySelector('input[value="start"]').checked = true;
  showRefusal('');
  checkEditor();
  $('#editor').showModal();
  $('#editor-payload').focus();
}

function showRefusal(message) {
  const refusal = $('#editor-refusal');
  refusal.textContent = message;
  refusal.hidden = !message;
  $('#editor-payload').setAttribute('aria-invalid', String(Boolean(message) || editor.parsed === undefined));
}

/** Parses the editor as it is typed: a JSON object, or why not. Changes must be reviewed again. */
function checkEditor() {
  const check = $('#editor-check');
  let parsed;
  try {
    parsed = JSON.parse($('#editor-payload').value);
  } catch (error) {
    parsed = undefined;
    check.textContent = `Not valid JSON: ${error.message}`;
  }
  if (parsed !== undefined && (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))) {
    parsed = undefined;
    check.textContent = 'The payload must be a JSON object.';
  } else if (parsed !== undefined) {
    check.textContent = 'Valid JSON.';
  }
  editor.parsed = parsed;
  $('#editor-payload').setAttribute('aria-invalid', String(parsed === undefined));
  $('#editor-diff').innerHTML = '';
  $('#editor-confirm').disabled = true;
  $('#editor-review').disabled = parsed === undefined;
}

function reviewEditor() {
  if (editor.parsed === undefined) return;
  const changes = payloadDiff(editor.task.payload ?? {}, editor.parsed);
  $('#editor-diff').innerHTML = changesHtml(changes);
  const next = (editor.task.payloadVersion ?? 1) + 1;
  $('#editor-confirm').textContent = `Retry with version ${next}`;
  $('#editor-confirm').disabled = changes.length === 0;
}

async function confirmEditor() {
  const task = editor.task;
  if (!task || editor.parsed === undefined) return;
  const from = $('#editor-from').querySelector('input:checked')?.value ?? 'start';
  $('#editor-confirm').disabled = true;
  try {
    await api.retryEdited(task.taskId, editor.parsed, task.payloadVersion ?? 1, from);
    $('#editor').close();
    toast(`Task re-queued with payload version ${(task.payloadVersion ?? 1) + 1}.`, 'success');
    markRequeued(task.taskId);
    changed();
    render();
    schedule();
    refreshDetail();
  } catch (error) {
    if (error.code === 'REQUEUE_FAILED') {
      // The new version is stored; only the retry was undone (docs/spec.md §17).
      $('#editor').close();
      toast(`Payload version ${(task.payloadVersion ?? 1) + 1} was stored, but the retry could not be queued: ${error.message} Retry it again.`);
      refreshDetail();
      return;
    }
    showRefusal(error.code === 'VERSION_CONFLICT'
      ? `${error.message} (close this editor; the detail shows the current version)`
      : error.message);
    $('#editor-payload').focus();
  }
}

/** Whether `value` holds a number JavaScript cannot carry exactly (an integer beyond 2^53). */
function hasUnsafeNumber(value) {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value);
  if (value && typeof value === 'object') return Object.values(value).some(hasUnsafeNumber);
  return false;
}

function wireEditor() {
  $('#editor-payload').addEventListener('input', () => {
    showRefusal(''); // a refusal was about what the field held before
    checkEditor();
  });
  $('#editor-review').addEventListener('click', reviewEditor);
  $('#editor-cancel').addEventListener('click', () => $('#editor').close());
  $('#editor-form').addEventListener('submit', (event) => {
    event.preventDefault();
    confirmEditor();
  });
  $('#editor').addEventListener('close', () => {
    editor.task = null;
    if (state.detail) $('#detail-close').focus();
  });
}

/**
 * "Fix and retry all (n)" (docs/spec.md §17): a merge patch for every failed task of one cause,
 * checked as it is typed, previewed by a dry run (how many would be retried, which skipped and
 * why, example changes), then applied page by page as "Retry all" is.
 */
const fixer = { errorGroup: null, patch: undefined, previewed: null };

function openFixer(errorGroup) {
  const group = state.groups.find((g) => g.errorGroup === errorGroup);
  if (!group || state.bulk) return;
  fixer.errorGroup = errorGroup;
  fixer.previewed = null;
  $('#fixer-title').textContent = `Fix and retry all (${group.count}): ${group.template}`;
  $('#fixer-patch').value = '{\n  \n}';
  $('#fixer-preview').innerHTML = '';
  checkFixer();
  $('#fixer').showModal();
  $('#fixer-patch').focus();
}

function checkFixer() {
  let patch;
  try {
    patch = JSON.parse($('#fixer-patch').value);
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
      patch = undefined;
      $('#fixer-check').textContent = 'The correction must be a JSON object.';
    } else {
      $('#fixer-check').textContent = Object.keys(patch).length ? 'Valid JSON.' : 'An empty patch changes nothing.';
    }
  } catch (error) {
    $('#fixer-check').textContent = `Not valid JSON: ${error.message}`;
  }
  fixer.patch = patch;
  fixer.previewed = null;
  $('#fixer-patch').setAttribute('aria-invalid', String(patch === undefined));
  $('#fixer-dry-run').disabled = patch === undefined;
  $('#fixer-confirm').disabled = true;
}

async function previewFixer() {
  if (fixer.patch === undefined) return;
  const patch = fixer.patch;
  try {
    const reply = await api.retryMany({ filter: { errorGroup: fixer.errorGroup }, patch, dryRun: true, limit: BULK_BATCH });
    if (fixer.patch !== patch) return; // edited meanwhile
    fixer.previewed = patch;
    $('#fixer-preview').innerHTML = dryRunHtml(reply);
    const would = reply.dryRun?.wouldRetry ?? 0;
    $('#fixer-confirm').textContent = `Fix and retry ${would}`;
    $('#fixer-confirm').disabled = would === 0;
  } catch (error) {
    $('#fixer-preview').textContent = error.message;
  }
}

async function confirmFixer() {
  const { errorGroup, previewed: patch } = fixer;
  if (!patch || state.bulk) return;
  const group = state.groups.find((g) => g.errorGroup === errorGroup);
  $('#fixer').close();
  const seen = new Set();
  await runBulk({ kind: 'group', errorGroup, total: group?.count ?? 0 }, '#groups-status', (reply) => {
    if (!reply) return { filter: { errorGroup }, patch, limit: BULK_BATCH };
    if (!reply.nextCursor || seen.has(reply.nextCursor)) return null;
    seen.add(reply.nextCursor);
    return { filter: { errorGroup }, patch, cursor: reply.nextCursor, limit: BULK_BATCH };
  });
  keepFocus('#groups-title', '#tasks-title');
}

function wireFixer() {
  $('#fixer-patch').addEventListener('input', checkFixer);
  $('#fixer-dry-run').addEventListener('click', previewFixer);
  $('#fixer-cancel').addEventListener('click', () => $('#fixer').close());
  // The groups are redrawn while it is open: give focus back to their heading.
  $('#fixer').addEventListener('close', () => keepFocus('#groups-title', '#tasks-title'));
  $('#fixer-form').addEventListener('submit', (event) => {
    event.preventDefault();
    confirmFixer();
  });
}

/** Opens a task's detail; closing it (Close, Escape) gives focus back to `opener`. */
function openDetail(taskId, opener) {
  const dialog = $('#detail');
  state.detail = { taskId, task: null, html: '', opener };
  $('#detail-title').textContent = detailTitle({ taskId });
  $('#detail-body').innerHTML = '<p class="state" role="status">Loading the task…</p>';
  dialog.showModal();
  $('#detail-close').focus();
  refreshDetail().then(schedule);
}

function wire() {
  $('#tasks tbody').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const taskId = button?.closest('tr')?.dataset.taskId;
    if (!button || !taskId || button.disabled) return;
    if (button.dataset.action === 'retry') retry(taskId);
    if (button.dataset.action === 'cancel') cancel(taskId);
    if (button.dataset.action === 'copy') copyId(taskId, button);
    if (button.dataset.action === 'details') {
      openDetail(taskId, `#tasks tr[data-task-id="${CSS.escape(taskId)}"] [data-action="details"]`);
    }
  });
  $('#tasks tbody').addEventListener('change', (event) => {
    const box = event.target.closest('input[data-action="select"]');
    const taskId = box?.closest('tr')?.dataset.taskId;
    if (!taskId) return;
    if (box.checked) state.selected.add(taskId);
    else state.selected.delete(taskId);
    render();
  });
  $('#select-all').addEventListener('change', (event) => {
    const failed = state.tasks.filter(isFailed).map((t) => t.taskId);
    state.selected = new Set(event.target.checked ? failed : []);
    render();
  });
  $('#retry-selected').addEventListener('click', () => retrySelected());

  $('#groups tbody').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const errorGroup = button?.closest('tr')?.dataset.errorGroup;
    if (!button || !errorGroup || button.getAttribute('aria-disabled') === 'true') return;
    if (button.dataset.action === 'retry-group') retryGroup(errorGroup);
    if (button.dataset.action === 'fix-group') openFixer(errorGroup);
    if (button.dataset.action === 'example') {
      const group = state.groups.find((g) => g.errorGroup === errorGroup);
      if (group?.exampleTaskId) {
        openDetail(group.exampleTaskId, `#groups tr[data-error-group="${CSS.escape(errorGroup)}"] [data-action="example"]`);
      }
    }
  });

  $('#confirm form').addEventListener('submit', (event) => {
    const opening = confirmations.at(-1);
    if (opening) opening.confirmed = event.submitter?.value === 'confirm';
  });
  $('#confirm').addEventListener('close', () => {
    const opening = confirmations.shift();
    opening?.answer(opening.confirmed);
  });

  $('#detail-close').addEventListener('click', () => $('#detail').close());
  wireEditor();
  wireFixer();
  $('#detail-body').addEventListener('click', (event) => {
    if (event.target.closest('button[data-action="edit"]') && state.detail?.task) {
      openEditor(state.detail.task);
      return;
    }
    const button = event.target.closest('button[data-action="retry-from"]');
    const taskId = state.detail?.taskId;
    if (!button || !taskId || button.disabled) return;
    button.disabled = true;
    // The detail is redrawn as the task moves on: keep focus inside the dialog.
    $('#detail-close').focus();
    retry(taskId, button.dataset.from);
  });
  $('#detail').addEventListener('close', () => {
    const opener = state.detail?.opener;
    state.detail = null;
    // The row may have been redrawn while the dialog was open: find its button again.
    const target = opener ? $(opener) : null;
    if (target) target.focus();
    else keepFocus('#tasks-title');
  });

  $('#identity').addEventListener('submit', (event) => {
    event.preventDefault();
    const userId = $('#user-id').value.trim();
    if (!userId) return;
    rememberUser(userId);
    signBackIn();
    state.tasks = [];
    state.selected.clear();
    state.groups = [];
    state.groupsStale = true;
    state.listTag = null;
    state.nextCursor = null;
    showState('Loading tasks…');
    // Another user: a new stream, from now.
    liveUpdates.stop();
    liveUpdates.lastId = null;
    startLive();
    load().then(schedule);
  });

  $('#create').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!hasIdentity()) {
      toast('Enter a user id first.');
      return;
    }
    const form = new FormData(event.target);
    const payload = Object.fromEntries(['steps', 'stepMs', 'failAttempts'].map((k) => [k, Number(form.get(k))]));
    const body = { type: 'demo', payload };
    const attempts = Number(form.get('autoAttempts'));
    // Sent only when asked for: without it, create behaves exactly as before.
    if (attempts > 0) {
      body.autoRetry = { attempts, delaySeconds: Number(form.get('autoDelay')), backoff: form.get('autoBackoff') };
    }
    const button = event.target.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await api.create(body, newIdempotencyKey());
    } catch (error) {
      toast(error.message);
    } finally {
      button.disabled = false;
    }
    changed();
    await load();
    schedule();
  });

  const showWork = () => {
    const form = new FormData($('#create'));
    const seconds = (Number(form.get('steps')) * Number(form.get('stepMs'))) / 1000;
    $('#work-total').value = Number.isFinite(seconds) ? `${Math.round(seconds * 10) / 10} s` : '?';
  };
  $('#create').addEventListener('input', showWork);
  showWork();

  $('#search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    applySearch($('#search').value);
  });
  $('#search-clear').addEventListener('click', () => {
    $('#search').value = '';
    applySearch('');
    $('#search').focus();
  });

  $('#status-filter').addEventListener('change', (event) => {
    state.status = event.target.value;
    state.tasks = [];
    state.listTag = null;
    state.nextCursor = null;
    load().then(schedule);
  });

  $('#refresh').addEventListener('click', () => {
    state.groupsStale = true;
    load().then(schedule);
  });
  $('#more').addEventListener('click', () => load({ append: true }));
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(state.timer);
      liveUpdates.stop();
    } else if (!state.signedOut) {
      // The stream resumes from its last id: what changed while hidden arrives with it.
      startLive();
      if (state.live.mode !== 'push') load().then(schedule);
    }
  });
  // A new sign-in link opened in this tab changes only the fragment: start again with it.
  window.addEventListener('hashchange', () => {
    if (/(?:^#|&)token=/.test(location.hash)) location.reload();
  });
  // Countdowns move every second, whatever the refresh interval.
  setInterval(() => { if (!document.hidden) tickCountdowns(document); }, 1000);
}

function start() {
  const { token, userId } = identity();
  if (token) {
    $('#user-id').closest('form').querySelectorAll('input, button, label').forEach((el) => { el.hidden = true; });
    const signedIn = $('#signed-in');
    signedIn.hidden = false;
    signedIn.textContent = `Signed in as ${userId ?? 'unknown user'}`;
  } else {
    $('#user-id').value = userId;
  }
  // A 401 means the sign-in is refused (bad signature, expired, wrong issuer or audience, or no
  // token where the service wants one): polling again would only be refused again.
  onUnauthenticated((error, { token: sent }) => {
    signOut(sent
      ? `The jobs API refused this sign-in link (${error.message}). ${AGAIN}`
      : `The jobs API needs a sign-in link (${error.message}). ${AGAIN}`);
  });
  wire();
  const shared = new URLSearchParams(location.search).get('q');
  if (shared) {
    $('#search').value = shared;
    applySearch(shared, { reload: false });
  }
  const problem = token ? tokenProblem(token) : null;
  if (problem) {
    signOut(SIGN_IN_MESSAGES[problem]);
    return;
  }
  startLive();
  load().then(schedule);
}

/**
 * Searches with the box's terms: checked here first (a term the page cannot read is said next
 * to the box), kept in the URL as `?q=` so the search can be shared, then the list again.
 */
function applySearch(text, { reload = true } = {}) {
  const { params, problem } = parseSearch(text);
  const shown = $('#search-problem');
  shown.hidden = !problem;
  shown.textContent = problem ?? '';
  $('#search').setAttribute('aria-invalid', problem ? 'true' : 'false');
  if (problem) return;
  state.query = text.trim();
  state.search = params;
  $('#search-clear').hidden = !state.query;
  const url = new URL(location.href);
  if (state.query) url.searchParams.set('q', state.query);
  else url.searchParams.delete('q');
  history.replaceState(null, '', url);
  if (!reload) return;
  state.tasks = [];
  state.listTag = null;
  state.nextCursor = null;
  state.windowEnded = false;
  showState('Searching…');
  load().then(schedule);
}

/** Opens the `watch` stream (unless `?live=poll`), once the page knows who it acts for. */
function startLive() {
  if (POLL_ONLY) {
    state.live = { mode: 'poll', reason: 'the page was opened with ?live=poll' };
    return;
  }
  if (hasIdentity() && !state.signedOut && !document.hidden) liveUpdates.start();
}

start();
