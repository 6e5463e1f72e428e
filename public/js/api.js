// The jobs API on the same origin, and who the page acts for.
//
// Identity: in development the user types a user id (remembered in localStorage) and it is sent
// as `userId`. With JOBS_AUTH_SECRET configured, the host application hands the page a signed
// token (HS256 JWT, sub = user id) in the URL fragment, `/#token=<jwt>`; the page moves it to
// sessionStorage, removes it from the address bar and sends it as `Authorization: Bearer`, and
// then sends no `userId` at all: the server takes the user from the token's `sub`. The page
// decodes `sub` (UTF-8) only to show who is signed in.

const TOKEN_KEY = 'jobs.token';
const USER_KEY = 'jobs.userId';

export class ApiError extends Error {
  constructor(message, { status = 0, code = 'NETWORK' } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function takeTokenFromFragment() {
  const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, '', location.pathname + location.search);
}

/** The token's `sub`, for display: base64url → bytes → UTF-8 (`atob` alone gives Latin-1). */
export function tokenSubject(token) {
  try {
    const base64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/** `{ userId, token }`: the token's subject when a token was handed over, else the typed id. */
export function identity() {
  takeTokenFromFragment();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) return { token, userId: tokenSubject(token) };
  return { token: null, userId: localStorage.getItem(USER_KEY) || '' };
}

export function rememberUser(userId) {
  localStorage.setItem(USER_KEY, userId);
}

/** Whether the page knows who it acts for: a handed-over token, or a typed user id. */
export function hasIdentity() {
  const { token, userId } = identity();
  return Boolean(token || userId);
}

async function call(action, { method = 'GET', query = {}, body } = {}) {
  const { token, userId } = identity();
  // With a token the server takes the user from `sub`; the page never claims one itself.
  const claimed = token ? {} : { userId };
  const params = new URLSearchParams({ action });
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  if (method === 'GET' && claimed.userId) params.set('userId', claimed.userId);
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';

  let response;
  try {
    response = await fetch(`/api/jobs?${params}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify({ ...body, ...claimed }),
    });
  } catch {
    throw new ApiError('Cannot reach the jobs API. Check your connection and try again.');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy's HTML error page, or an empty body.
  }
  if (!response.ok) {
    const message = data?.error || `The jobs API answered HTTP ${response.status}.`;
    throw new ApiError(message, { status: response.status, code: data?.code || 'HTTP' });
  }
  return data;
}

export const api = {
  list: (query) => call('list', { query }),
  get: (taskId) => call('get', { query: { taskId } }),
  create: (body) => call('create', { method: 'POST', body }),
  retry: (taskId) => call('retry', { method: 'POST', body: { taskId } }),
  cancel: (taskId) => call('cancel', { method: 'POST', body: { taskId } }),
  /** `{taskIds}` (1..=100) or `{filter, cursor?}` → `{retried, skipped, nextCursor}`. */
  retryMany: (body) => call('retryMany', { method: 'POST', body }),
  /** The user's failures by cause: `{groups: [{errorGroup, template, count, lastAt, exampleTaskId}]}`. */
  groups: (status = 'failed') => call('groups', { query: { status } }),
};
