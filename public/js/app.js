// The Task Manager page: the user's tasks, one-click retry, cancel, a demo task form, and live
// refresh while anything is queued or processing (paused while the tab is hidden).

import { api, hasIdentity, identity, rememberUser } from './api.js';
import { isActive, renderTasks } from './view.js';

const LIVE_INTERVAL_MS = 1000;
const IDLE_INTERVAL_MS = 10000;
const PAGE_SIZE = 20;

const $ = (selector) => document.querySelector(selector);
const state = {
  tasks: [],
  nextCursor: null,
  status: '',
  retrying: new Set(),
  timer: null,
  // Responses to list requests sent before this moment are stale (see `retry`).
  freshSince: 0,
};

function toast(message, kind = 'error') {
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

function render() {
  renderTasks($('#tasks tbody'), state.tasks, state.retrying);
  $('#tasks').hidden = state.tasks.length === 0;
  $('#more').hidden = !state.nextCursor;
  if (state.tasks.length === 0) {
    showState(state.status ? `No ${state.status} tasks.` : 'No tasks yet. Create a demo task above to see one run.');
  } else {
    showState('');
  }
  const live = state.tasks.some(isActive);
  $('#live').textContent = live ? 'Updating live' : '';
}

async function load({ append = false } = {}) {
  if (!hasIdentity()) {
    state.tasks = [];
    showState('Enter a user id to see its tasks.');
    $('#tasks').hidden = true;
    return;
  }
  const startedAt = performance.now();
  try {
    const page = await api.list({
      status: state.status,
      limit: PAGE_SIZE,
      cursor: append ? state.nextCursor : undefined,
    });
    if (startedAt < state.freshSince) return;
    if (append) {
      state.tasks = state.tasks.concat(page.tasks);
    } else {
      // Keep pages the user loaded beyond the first: replace only what the first page covers.
      const fresh = new Set(page.tasks.map((t) => t.taskId));
      const rest = state.tasks.slice(PAGE_SIZE).filter((t) => !fresh.has(t.taskId));
      state.tasks = page.tasks.concat(rest);
      if (rest.length === 0) state.nextCursor = page.nextCursor;
    }
    if (append) state.nextCursor = page.nextCursor;
    render();
  } catch (error) {
    showState(error.code === 'DB_UNAVAILABLE'
      ? 'The task database is unavailable. Retrying automatically…'
      : `Could not load tasks: ${error.message}`, true);
  }
}

function schedule() {
  clearTimeout(state.timer);
  if (document.hidden) return;
  const busy = state.tasks.some(isActive) || state.retrying.size > 0;
  state.timer = setTimeout(async () => {
    await load();
    schedule();
  }, busy ? LIVE_INTERVAL_MS : IDLE_INTERVAL_MS);
}

function updateTask(taskId, changes) {
  state.tasks = state.tasks.map((t) => (t.taskId === taskId ? { ...t, ...changes } : t));
}

async function retry(taskId) {
  if (state.retrying.has(taskId)) return;
  state.retrying.add(taskId);
  render();
  try {
    const result = await api.retry(taskId);
    if (result.success) {
      const task = state.tasks.find((t) => t.taskId === taskId);
      updateTask(taskId, { status: 'queued', progress: 0, lastError: null, retryCount: (task?.retryCount ?? 0) + 1 });
      state.freshSince = performance.now();
      toast('Task re-queued.', 'success');
    }
  } catch (error) {
    toast(error.message || 'Failed to retry task.');
  } finally {
    state.retrying.delete(taskId);
    render();
    schedule();
  }
}

async function cancel(taskId) {
  try {
    await api.cancel(taskId);
    updateTask(taskId, { status: 'cancelled' });
    state.freshSince = performance.now();
    render();
  } catch (error) {
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

function wire() {
  $('#tasks tbody').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const taskId = button?.closest('tr')?.dataset.taskId;
    if (!button || !taskId || button.disabled) return;
    if (button.dataset.action === 'retry') retry(taskId);
    if (button.dataset.action === 'cancel') cancel(taskId);
    if (button.dataset.action === 'copy') copyId(taskId, button);
  });

  $('#identity').addEventListener('submit', (event) => {
    event.preventDefault();
    const userId = $('#user-id').value.trim();
    if (!userId) return;
    rememberUser(userId);
    state.tasks = [];
    state.nextCursor = null;
    showState('Loading tasks…');
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
    const button = event.target.querySelector('button');
    button.disabled = true;
    try {
      await api.create({ type: 'demo', payload });
    } catch (error) {
      toast(error.message);
    } finally {
      button.disabled = false;
    }
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

  $('#status-filter').addEventListener('change', (event) => {
    state.status = event.target.value;
    state.tasks = [];
    state.nextCursor = null;
    load().then(schedule);
  });

  $('#refresh').addEventListener('click', () => load().then(schedule));
  $('#more').addEventListener('click', () => load({ append: true }));
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(state.timer);
    else load().then(schedule);
  });
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
  wire();
  load().then(schedule);
}

start();
