// Rendering of task rows. Rows are keyed by task id and replaced only when what they show
// changes, so live refresh does not steal keyboard focus or close an open error history.

const ACTIVE = new Set(['queued', 'processing']);

const escape = (value) =>
  String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '—');

export const isActive = (task) => ACTIVE.has(task.status);

function actions(task, retrying) {
  if (task.status === 'failed') {
    return retrying
      ? `<button type="button" data-action="retry" disabled aria-busy="true" aria-label="Retrying task ${escape(task.taskId)}">Retrying...</button>`
      : `<button type="button" data-action="retry" aria-label="Retry task ${escape(task.taskId)}">Retry</button>`;
  }
  if (isActive(task)) {
    return `<button type="button" class="danger" data-action="cancel" aria-label="Cancel task ${escape(task.taskId)}">Cancel</button>`;
  }
  return '';
}

function history(task) {
  const entries = task.errorHistory ?? [];
  if (entries.length === 0) return '';
  const items = entries
    .slice()
    .reverse()
    .map((e) => `<li>${e.attempt > 0 ? `Attempt ${escape(e.attempt)}` : 'Before its first run'} at ${escape(time(e.at))}: ${escape(e.message)}</li>`)
    .join('');
  return `<details data-history><summary>Error history (${entries.length})</summary><ol>${items}</ol></details>`;
}

function rowHtml(task, retrying) {
  const progress = Math.max(0, Math.min(100, Number(task.progress) || 0));
  const cell = (label, content, extra = '') => `<td data-label="${label}"${extra}><div class="cell">${content}</div></td>`;
  return [
    cell('Task', `<span class="id" title="${escape(task.taskId)}">…${escape(task.taskId.slice(-8))}</span><button type="button" class="secondary copy" data-action="copy" aria-label="Copy task id ${escape(task.taskId)}">Copy</button>`),
    cell('Type', escape(task.type)),
    cell('Status', `<span class="badge ${escape(task.status)}" data-status>${escape(task.status)}</span>`),
    cell('Progress', `<span class="progress" role="progressbar" aria-label="Progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${progress}"><span style="width:${progress}%"></span></span> <span data-progress>${progress}%</span>`),
    cell('Retries', `<span data-retries>${escape(task.retryCount)} / ${escape(task.maxRetries)}</span>`),
    cell('Last error', `<span class="error-text" data-error>${escape(task.lastError ?? '')}</span>${history(task)}`),
    cell('Times', `created ${escape(time(task.createdAt))}<br>updated ${escape(time(task.updatedAt))}`, ' class="times"'),
    cell('Actions', `<div class="actions">${actions(task, retrying)}</div>`),
  ].join('');
}

/** Brings `tbody` in line with `tasks`, touching only rows whose content changed. */
export function renderTasks(tbody, tasks, retryingIds) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.taskId, row]));
  const focused = document.activeElement;
  let previous = null;
  for (const task of tasks) {
    let row = existing.get(task.taskId);
    existing.delete(task.taskId);
    const html = rowHtml(task, retryingIds.has(task.taskId));
    if (!row) {
      row = document.createElement('tr');
      row.dataset.taskId = task.taskId;
    }
    if (row.dataset.html !== html) {
      const refocus = row.contains(focused) ? focused.dataset.action : null;
      const historyOpen = row.querySelector('details[data-history]')?.open ?? false;
      row.innerHTML = html;
      const details = row.querySelector('details[data-history]');
      if (details) details.open = historyOpen;
      row.dataset.html = html;
      row.dataset.status = task.status;
      if (refocus) row.querySelector(`[data-action="${refocus}"]`)?.focus();
    }
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (expected !== row) tbody.insertBefore(row, expected);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}
