// The switch's JSON API, as the console uses it. Authentication rides on the session cookie
// set at login (HttpOnly); the token from the login answer is also sent as a bearer token
// while this page lives, so a browser that refuses the cookie still works.

let token = null;
let onUnauthorized = null;

/** An API failure: HTTP status, the server's message, and the response headers. */
export class ApiError extends Error {
  constructor(status, message, headers) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

/** Calls `fn()` when a request (other than login and me) answers 401: the session ended. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** Sends one request; resolves with the parsed JSON (or null), rejects with `ApiError`. */
export async function request(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, e && e.message ? e.message : 'network error', new Headers());
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!res.ok) {
    const message = (data && data.error) || text || `HTTP ${res.status}`;
    if (res.status === 401 && !quiet401 && onUnauthorized) onUnauthorized();
    throw new ApiError(res.status, message, res.headers);
  }
  return data;
}

const enc = encodeURIComponent;

/** POST /api/v1/auth/login. */
export async function login(username, password) {
  const r = await request('POST', '/api/v1/auth/login', { username, password }, { quiet401: true });
  token = r && r.token ? r.token : null;
  return r;
}

/** POST /api/v1/auth/logout (errors ignored: the session is dropped here anyway). */
export async function logout() {
  try {
    await request('POST', '/api/v1/auth/logout', undefined, { quiet401: true });
  } catch (_) {
    // Already gone.
  }
  token = null;
}

/** GET /api/v1/auth/me: the signed-in user, or null when not signed in. */
export async function me() {
  try {
    return await request('GET', '/api/v1/auth/me', undefined, { quiet401: true });
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

/** The bearer token from this page's login, if any (for the phone's socket). */
export function currentToken() {
  return token;
}

export const consoleConfig = () => request('GET', '/api/v1/console/config');
export const agent = (id) => request('GET', `/api/v1/agents/${enc(id)}`);
export const agents = () => request('GET', '/api/v1/agents');
export const queues = () => request('GET', '/api/v1/queues');
export const setState = (id, state, reason) =>
  request('PUT', `/api/v1/agents/${enc(id)}/state`, reason ? { state, reason } : { state });
export const callContext = (callId) => request('GET', `/api/v1/calls/${enc(callId)}/context`);
export const disposition = (callId, body) => request('POST', `/api/v1/calls/${enc(callId)}/disposition`, body);
/** GET /api/v1/kb/search; `kind` null searches articles and quick replies alike. */
export const kbSearch = (q, kind, limit = 10) =>
  request('GET', `/api/v1/kb/search?q=${enc(q)}${kind ? `&kind=${enc(kind)}` : ''}&limit=${limit}`);
export const kbArticles = () => request('GET', '/api/v1/kb/articles');
export const kbArticle = (id) => request('GET', `/api/v1/kb/articles/${enc(id)}`);
export const users = () => request('GET', '/api/v1/users');
export const createUser = (body) => request('POST', '/api/v1/users', body);
export const deleteUser = (username) => request('DELETE', `/api/v1/users/${enc(username)}`);

/** GET /api/v1/supervisor/overview, with the day (for service level) starting at local midnight. */
export function overview() {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  return request('GET', `/api/v1/supervisor/overview?since_ms=${midnight.getTime()}`);
}
