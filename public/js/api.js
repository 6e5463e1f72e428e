// The jobs API on the same origin, and who the page acts for.
//
// Identity: in development the user types a user id (remembered in localStorage) and it is sent
// as `userId`. With JOBS_AUTH_SECRET configured, the host application hands the page a signed
// token (HS256 JWT, sub = user id) in the URL fragment, `/#token=<jwt>`; the page moves it to
// sessionStorage, removes it from the address bar and sends it as `Authorization: Bearer`, and
// then sends no `userId` at all: the server takes the user from the token's `sub`. The page
// decodes the token only to show who is signed in (`sub`, UTF-8) and to say at once when it is
// malformed or expired (`exp`) instead of calling the API with it; the API checks the signature.

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
  let token = match[1];
  try {
    token = decodeURIComponent(token);
  } catch {
    // Not URL-encoded (a stray `%`): kept as it is, and found malformed, not a blank page.
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, '', location.pathname + location.search);
}

/** The server's leeway on `exp` (docs/spec.md §6): a token it would still accept is not expired here. */
const EXP_LEEWAY_SECONDS = 30;

/** A JSON object from one base64url part of a JWT: base64url → bytes → UTF-8 (`atob` alone gives Latin-1). */
function jwtPart(part) {
  if (!/^[A-Za-z0-9_-]+$/.test(part)) throw new Error('not base64url');
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
  const value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
  return value;
}

/** The token's claims, or null when it is not a JWT (three base64url parts, header and payload JSON objects). */
function tokenClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[2]) return null;
  try {
    jwtPart(parts[0]);
    return jwtPart(parts[1]);
  } catch {
    return null;
  }
}

/** The token's `sub`, for display. */
export function tokenSubject(token) {
  const sub = tokenClaims(token)?.sub;
  return typeof sub === 'string' ? sub : null;
}

/** Why the handed-over token cannot be used: 'malformed', 'expired', or null when it may be. */
export function tokenProblem(token, nowMs = Date.now()) {
  const claims = tokenClaims(token);
  if (!claims) return 'malformed';
  if (typeof claims.exp === 'number' && (claims.exp + EXP_LEEWAY_SECONDS) * 1000 < nowMs) return 'expired';
  return null;
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

let unauthenticated = () => {};

/** `handler(error, { token })` runs on every 401 from the API, before the call rejects. */
export function onUnauthenticated(handler) {
  unauthenticated = handler;
}

/** A fresh UUID: `crypto.randomUUID` where the page is a secure context (https, localhost). */
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function call(action, { method = 'GET', query = {}, body, headers: extra = {} } = {}) {
  const { token, userId } = identity();
  // With a token the server takes the user from `sub`; the page never claims one itself.
  const claimed = token ? {} : { userId };
  const params = new URLSearchParams({ action });
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  if (method === 'GET' && claimed.userId) params.set('userId', claimed.userId);
  const headers = { Accept: 'application/json', ...extra };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';

  let response;
  try {
    response = await fetch(`/api/jobs?${params}`, {
      method,
      headers,
      // The API's replies are never cached (`no-store`); the page keeps `list`'s ETag itself.
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify({ ...body, ...claimed }),
    });
  } catch {
    throw new ApiError('Cannot reach the jobs API. Check your connection and try again.');
  }
  // Only when the page sent If-None-Match: what it holds is still current.
  if (response.status === 304) return { notModified: true, etag: response.headers.get('ETag') };
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy's HTML error page, or an empty body.
  }
  if (!response.ok) {
    const message = data?.error || `The jobs API answered HTTP ${response.status}.`;
    const error = new ApiError(message, { status: response.status, code: data?.code || 'HTTP' });
    if (response.status === 401) unauthenticated(error, { token: Boolean(token) });
    throw error;
  }
  const etag = response.headers.get('ETag');
  return etag && data && typeof data === 'object' ? { ...data, etag } : data;
}

export const newIdempotencyKey = uuid;

export const api = {
  /**
   * A page of tasks, `{tasks, nextCursor, etag}`. Given the `etag` of the page the caller holds,
   * `{notModified: true}` when that page is still what the API would answer (HTTP 304).
   */
  list: (query, etag) => call('list', { query, headers: etag ? { 'If-None-Match': etag } : {} }),
  get: (taskId) => call('get', { query: { taskId } }),
  /**
   * One create per click: `idempotencyKey` (fresh per click, from `newIdempotencyKey`) is sent
   * as `Idempotency-Key`, so a re-send of that click's request names the same task.
   */
  create: (body, idempotencyKey) => call('create', { method: 'POST', body, headers: { 'Idempotency-Key': idempotencyKey } }),
  retry: (taskId, from) => call('retry', { method: 'POST', body: from ? { taskId, from } : { taskId } }),
  /** Retry with a new payload, made from `expectedVersion` (docs/spec.md §17). */
  retryEdited: (taskId, payload, expectedVersion, from) =>
    call('retry', { method: 'POST', body: { taskId, payload, expectedVersion, from } }),
  cancel: (taskId) => call('cancel', { method: 'POST', body: { taskId } }),
  /** `{taskIds}` (1..=100) or `{filter, cursor?}` → `{retried, skipped, nextCursor}`. */
  retryMany: (body) => call('retryMany', { method: 'POST', body }),
  /** Failures per hour over the last 24 h, by cause, with retries and recoveries (docs/spec.md §22). */
  failures: () => call('failures'),
  /** The user's failures by cause: `{groups: [{errorGroup, template, count, lastAt, exampleTaskId}]}`. */
  groups: (status = 'failed') => call('groups', { query: { status } }),
};
