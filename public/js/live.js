// Live updates: the API's `watch` stream (docs/spec.md §18) read with `fetch`, so the token goes
// in `Authorization` as on every call (EventSource cannot send headers), and resumed after a
// drop from the last event's id (`Last-Event-ID`). When the stream cannot be used (the API
// answers an error such as 503 WATCH_UNAVAILABLE, or a proxy buffers it so `ready` never comes)
// the page polls `list` instead; it tries the stream again a while later.

import { identity } from './api.js';

/** How long `ready` may take before the stream counts as buffered by a proxy. */
const READY_WITHIN_MS = 5000;
/** After the stream failed: how long the page polls before it tries the stream again. */
const RETRY_STREAM_AFTER_MS = 60000;
/** The first reconnect after a drop waits this long, doubling up to 30 s while drops repeat. */
const RECONNECT_MS = 1000;
/** No frame for this long (pings come every 15 s): the connection is dead; reconnect. */
const SILENCE_MS = 45000;

/** Parses a text/event-stream body into `{event, id, data}` frames (comments: event ':'). */
export async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame = { event: 'message', id: null, data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) { frame.event = ':'; continue; }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') frame.event = value;
        else if (field === 'id') frame.id = value;
        else if (field === 'data') frame.data += value;
      }
      yield frame;
    }
  }
}

/**
 * Keeps a `watch` stream open while the page is visible. `handlers`:
 * - `mode(mode, reason)`: 'push' once a stream is ready, 'poll' when the page must poll;
 * - `sync()`: reload the list (a new stream that did not resume, or `reset`);
 * - `task(summary)`: a task changed;
 * - `unauthenticated(message)`: the API refused the sign-in (401), as a stream ends when its
 *   token expires and its reconnect is refused.
 */
export class LiveUpdates {
  constructor(handlers) {
    this.handlers = handlers;
    this.lastId = null;
    this.abort = null;
    this.running = false;
    this.retryTimer = null;
    this.failures = 0;
  }

  start() {
    if (this.running) return;
    this.running = true;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.abort?.abort();
    this.abort = null;
  }

  async connect() {
    if (!this.running) return;
    const abort = new AbortController();
    this.abort = abort;
    const { token, userId } = identity();
    const params = new URLSearchParams({ action: 'watch' });
    if (!token && userId) params.set('userId', userId);
    const headers = { Accept: 'text/event-stream' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    let ready = false;
    const opened = performance.now();
    const buffered = setTimeout(() => { if (!ready) abort.abort('buffered'); }, READY_WITHIN_MS);
    // A connection a sleeping laptop or a NAT dropped silently: no ping arrives.
    let silence = null;
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => abort.abort('silent'), SILENCE_MS);
    };
    try {
      const response = await fetch(`/api/jobs?${params}`, { headers, cache: 'no-store', signal: abort.signal });
      if (this.abort !== abort) return;
      if (!response.ok || !response.body) {
        let reason = `the API answered HTTP ${response.status}`;
        try { reason = (await response.json()).error || reason; } catch { /* not JSON */ }
        if (response.status === 401) {
          this.stop();
          return this.handlers.unauthenticated(reason);
        }
        return this.fallBack(reason);
      }
      heard();
      for await (const frame of frames(response.body)) {
        heard();
        if (frame.id) this.lastId = frame.id;
        if (frame.event === 'ready') {
          ready = true;
          this.handlers.mode('push');
          if (!JSON.parse(frame.data || '{}').resumed) this.handlers.sync();
        } else if (frame.event === 'task') {
          this.handlers.task(JSON.parse(frame.data));
        } else if (frame.event === 'reset') {
          this.handlers.sync();
        }
      }
      // `end`, or the stream closed: reconnect from the last id, at once after a stream that
      // lasted, backing off after one that closed straight away (nothing hammers the API).
      if (this.abort !== abort) return;
      if (performance.now() - opened > RECONNECT_MS * 5) {
        this.failures = 0;
        this.connect();
      } else {
        this.failures += 1;
        this.retryTimer = setTimeout(() => this.connect(), Math.min(30000, RECONNECT_MS * 2 ** (this.failures - 1)));
      }
    } catch (error) {
      if (!this.running || this.abort !== abort) return;
      if (!ready) return this.fallBack(abort.signal.reason === 'buffered'
        ? 'the stream is buffered on its way here' : 'the stream could not be opened');
      // A drop after it worked: reconnect, backing off while drops repeat.
      this.failures += 1;
      const wait = Math.min(30000, RECONNECT_MS * 2 ** (this.failures - 1));
      this.retryTimer = setTimeout(() => this.connect(), wait);
    } finally {
      clearTimeout(buffered);
      clearTimeout(silence);
    }
  }

  /** Polls instead, and tries the stream again later. */
  fallBack(reason) {
    this.abort = null;
    // The next stream starts afresh (the page reloads its list on its `ready`): a position the
    // server could not resume from must not be sent again and again.
    this.lastId = null;
    this.handlers.mode('poll', reason);
    if (!this.running) return;
    this.retryTimer = setTimeout(() => this.connect(), RETRY_STREAM_AFTER_MS);
  }
}
