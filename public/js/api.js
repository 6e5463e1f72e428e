// The jobs API on the same origin, and who the page acts for.
//
// Identity: in development the user types a user id (remembered in localStorage) and it is sent
// as `userId`. With JOBS_AUTH_SECRET configured, the host application hands the page a signed
// token (HS256 JWT, sub = user id) in the URL fragment, `/#token=<jwt>`; the page moves it to
// sessionStorage, removes it from the address bar and sends it as `Authorization: Bearer`.

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

function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub ?? null;
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

async function call(action, { method = 'GET', query = {}, body } = {}) {
  const { token, userId } = identity();
  const params = new URLSearchParams({ action });
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  if (method === 'GET' && userId) params.set('userId', userId);
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';

  let response;
  try {
    response = await fetch(`/api/jobs?${params}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify({ ...body, userId }),
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
  create: (body) => call('create', { method: 'POST', body }),
  retry: (taskId) => call('retry', { method: 'POST', body: { taskId } }),
  cancel: (taskId) => call('cancel', { method: 'POST', body: { taskId } }),
};
