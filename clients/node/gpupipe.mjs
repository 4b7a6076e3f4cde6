// Client of `gpupipe serve` for Node renderers (Node >= 18; global fetch, no dependencies).
//
//   import { GpupipeClient } from './gpupipe.mjs';
//   const gp = new GpupipeClient({ baseUrl: 'http://127.0.0.1:8765' });     // or { socketPath: '/run/gpupipe.sock' }
//   const dataUri = await gp.uri('clip/frame_00001.png', { size: '1920x1080' });   // for page.evaluate
//   img.src = gp.imageUrl('clip/frame_00001.png');                                 // URL mode: no base64 at all
//   img.src = gp.imageUrl({ src: 'clip.mp4', t: time, size: '1920x1080' });       // a video clip's frame, decoded by gpupipe
//   const sched = await gp.schedule(['clip/frame_00001.png', { src: 'clip.mp4', frame: 12 }, ...]);  ...  await sched.close();
//
// Frame paths are relative to one of the service's --root directories (or absolute inside one). A frame
// of a video clip is `{ src, frame }` (display index, from 0) or `{ src, t }` (seconds: the last frame whose
// timestamp is <= t, as a browser shows at currentTime = t); uri(), image() and imageUrl() take it, with
// the output options in the same object, or the positional form (src, { frame | t, format, size, quality }).
// Every failure becomes a GpupipeError (types in gpupipe.d.ts):
// - an error answer of the service: its HTTP `status`, `type` (FrameNotFound, PathRefused, ...) and `src`;
// - no answer at all: `status` null and `type` 'ConnectionError' (the connection failed: `code` says how,
//   e.g. ECONNREFUSED, and `cause` is the original error) or 'Timeout' (no answer within `timeoutMs`).
// 503 answers (queue or byte budget full, or type FrameChanged: the frame's file changed while it was
// read) are retried after their Retry-After (at most 10 s), and refused connections (ECONNREFUSED; ENOENT
// for a socket path: the service is not up, or restarting) after `retryDelayMs`, `retries` times in all,
// as the Python client does for 503 answers. Timeouts are not retried.
//
// `socketPath` talks to `gpupipe serve --socket PATH` over node:http (fetch cannot reach a Unix socket
// without a dependency); imageUrl() needs a TCP service, since a browser cannot reach a Unix socket.

const DEFAULT_URL = 'http://127.0.0.1:8765';
const MAX_RETRY_WAIT_S = 10; // the longest Retry-After a retry waits for
const RETRIED_CODES = new Set(['ECONNREFUSED', 'ENOENT']); // nobody listens (yet): asking again may succeed
const SYSTEM_CODE = /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/; // a connection's failure (not e.g. ERR_INVALID_ARG_TYPE, a bug)

/**
 * A failure of a request to the service: an error answer (`status`, `type`, `src`), or no answer
 * (`status` null, `type` 'ConnectionError' with the system `code`, or 'Timeout').
 */
export class GpupipeError extends Error {
  constructor(status, type, message, src = null, retryAfter = null, { code = null, cause } = {}) {
    super(status == null ? `${type}: ${message}` : `${status} ${type}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'GpupipeError';
    this.status = status;
    this.type = type;
    this.src = src;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

/** `{ frame }`, `{ t }` or `{}`: which frame of a video clip, checked (a TypeError for a bad or doubled pick). */
function pick(frame, t) {
  if (frame != null && t != null) throw new TypeError('give one of frame (a display index) and t (seconds), not both');
  if (frame != null) {
    if (!Number.isSafeInteger(frame) || frame < 0) throw new TypeError(`frame must be a display index, an integer from 0; got ${frame}`);
    return { frame };
  }
  if (t != null) {
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw new TypeError(`t must be a finite number of seconds from 0; got ${t}`);
    return { t };
  }
  return {};
}

/** The query of a frame request: `(src, opts)` or `({ src, frame | t, ...opts })`. */
function query(first, opts = {}) {
  const req = first !== null && typeof first === 'object' ? { ...opts, ...first } : { ...opts, src: first };
  const { src } = req;
  if (typeof src !== 'string' || src === '') throw new TypeError('src must be a non-empty frame path');
  const q = new URLSearchParams({ src });
  const { frame, t } = pick(req.frame, req.t);
  if (frame != null) q.set('frame', String(frame));
  if (t != null) q.set('t', String(t)); // JavaScript's shortest round-trip decimal: 0.4, 0.03333333333333333, 1e-7
  if (req.format != null) q.set('format', String(req.format));
  if (req.size != null) q.set('size', sizeText(req.size));
  if (req.quality != null) q.set('quality', String(req.quality));
  return q.toString();
}

/** A schedule's source as its JSON body carries it: a frame path, or `{ src, frame }` / `{ src, t }`. */
function scheduleItem(source) {
  if (source === null || typeof source !== 'object') return source;
  const { src, frame, t } = source;
  if (typeof src !== 'string' || src === '') throw new TypeError('a video frame in a schedule needs src, a non-empty path');
  const which = pick(frame, t);
  if (which.frame == null && which.t == null) throw new TypeError(`a video frame in a schedule needs frame or t (${src}); a frame file is a plain string`);
  return { src, ...which };
}

const sizeText = (size) => (Array.isArray(size) ? `${size[0]}x${size[1]}` : String(size));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client of one `gpupipe serve` instance. */
export class GpupipeClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the service, default $GPUPIPE_URL or http://127.0.0.1:8765
   * @param {string} [options.socketPath] the service's Unix socket (`gpupipe serve --socket PATH`) instead of baseUrl
   * @param {number} [options.timeoutMs] per request, default 120000
   * @param {number} [options.retries] retries of a 503 answer or a refused connection, default 3
   * @param {number} [options.retryDelayMs] wait before retrying a refused connection (or a 503 without Retry-After), default 1000
   * @param {typeof fetch} [options.fetch] a fetch implementation, default the global one (or node:http for socketPath)
   */
  constructor({ baseUrl, socketPath, timeoutMs = 120_000, retries = 3, retryDelayMs = 1000, fetch: fetchImpl } = {}) {
    if (!Number.isInteger(retries) || retries < 0) throw new TypeError(`retries must be a non-negative integer, got ${retries}`);
    this.socketPath = socketPath ?? null;
    this.baseUrl = this.socketPath != null ? 'http://localhost' : String(baseUrl ?? globalThis.process?.env?.GPUPIPE_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.retryDelayMs = retryDelayMs;
    this.fetch = fetchImpl ?? (this.socketPath != null ? unixSocketFetch(this.socketPath) : globalThis.fetch);
    if (typeof this.fetch !== 'function') throw new Error('no fetch: use Node >= 18 or pass options.fetch');
  }

  /** Where requests go, for messages: the socket path or the base URL. */
  get #where() {
    return this.socketPath != null ? `unix:${this.socketPath}` : this.baseUrl;
  }

  /** One answer, read by `read(res)`; 503 answers and refused connections asked again up to `retries` times. */
  async #request(method, path, body, read) {
    for (let attempt = 0; ; attempt++) {
      const init = { method, signal: AbortSignal.timeout(this.timeoutMs) };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers = { 'content-type': 'application/json' };
      }
      let res;
      try {
        res = await this.fetch(this.baseUrl + path, init);
        if (res.ok) return await read(res);
      } catch (e) {
        const err = this.#transportError(e);
        if (RETRIED_CODES.has(err.code) && attempt < this.retries) {
          await sleep(this.retryDelayMs);
          continue;
        }
        throw err;
      }
      const err = await errorOf(res);
      if (res.status === 503 && attempt < this.retries) {
        await sleep(err.retryAfter != null ? 1000 * Math.min(err.retryAfter, MAX_RETRY_WAIT_S) : this.retryDelayMs);
        continue;
      }
      throw err;
    }
  }

  /** The GpupipeError for a request that got no answer; other errors (a bug, a bad argument) as they are. */
  #transportError(e) {
    if (e instanceof GpupipeError) return e;
    if (e?.name === 'TimeoutError') {
      return new GpupipeError(null, 'Timeout', `no answer from ${this.#where} within ${this.timeoutMs} ms`, null, null, { cause: e });
    }
    const code = systemCode(e);
    if (code != null || (e instanceof TypeError && e.message === 'fetch failed')) {
      const hint = RETRIED_CODES.has(code) ? ': is gpupipe serve running there?' : '';
      return new GpupipeError(null, 'ConnectionError', `cannot reach ${this.#where} (${code ?? e.cause?.message ?? e.message})${hint}`,
        null, null, { code, cause: e });
    }
    return e;
  }

  /**
   * The URL of a frame's image, for a page's `<img src>` (URL mode). `imageUrl(src, opts)` or
   * `imageUrl({ src, frame | t, ...opts })`; options: format, size ('WxH' or [w, h]), quality.
   */
  imageUrl(src, opts = {}) {
    const q = query(src, opts);
    if (this.socketPath != null) throw new Error('a browser cannot load an image from a Unix socket; serve on TCP for URL mode');
    return `${this.baseUrl}/v1/image?${q}`;
  }

  /** The frame's `data:image/...;base64,` URI (a string, for page.evaluate); arguments as imageUrl(). */
  async uri(src, opts = {}) {
    const q = query(src, opts);
    return this.#request('GET', `/v1/uri?${q}`, undefined, (res) => res.text());
  }

  /** The frame's encoded image: `{ bytes: Uint8Array, contentType }`; arguments as imageUrl(). */
  async image(src, opts = {}) {
    const q = query(src, opts);
    return this.#request('GET', `/v1/image?${q}`, undefined, async (res) => ({
      bytes: new Uint8Array(await res.arrayBuffer()),
      contentType: res.headers.get('content-type'),
    }));
  }

  /**
   * Declare the order in which frames will be requested (the service evicts by next use and reads ahead):
   * frame paths and video frames (`{ src, frame }` or `{ src, t }`). Resolves to `{ id, missing,
   * missingCount, close() }`: `missing` names the sources' paths under no root, each once, which the
   * service left out (at most 100; `missingCount` counts them all). close() withdraws the schedule (also
   * `await using` where supported).
   */
  async schedule(sources, opts = {}) {
    const body = { sources: Array.from(sources, scheduleItem) };
    for (const k of ['format', 'size', 'quality']) {
      if (opts[k] != null) body[k] = k === 'size' ? sizeText(opts.size) : opts[k];
    }
    const answer = await this.#request('POST', '/v1/schedules', body, (res) => res.json());
    const { id } = answer;
    const missing = Array.isArray(answer.missing) ? answer.missing.map(String) : [];
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      try {
        await this.#request('DELETE', `/v1/schedules/${encodeURIComponent(id)}`, undefined, () => undefined);
      } catch (e) {
        if (!(e instanceof GpupipeError && e.status === 404)) throw e;
      }
    };
    const handle = { id, missing, missingCount: Number(answer.missing_count ?? missing.length), close };
    if (Symbol.asyncDispose) handle[Symbol.asyncDispose] = close;
    return handle;
  }

  /** The service's /healthz answer. */
  async health() {
    return this.#request('GET', '/healthz', undefined, (res) => res.json());
  }
}

async function errorOf(res) {
  const retry = res.headers.get('retry-after');
  const retryAfter = retry != null && /^\d+$/.test(retry) ? Number(retry) : null;
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (body && typeof body === 'object') {
    return new GpupipeError(res.status, String(body.type), String(body.error), body.src ?? null, retryAfter);
  }
  return new GpupipeError(res.status, 'HTTPError', res.statusText || 'error', null, retryAfter);
}

/** The system error code (ECONNREFUSED, ENOENT, ...) of an error or of its causes, or null. */
function systemCode(e) {
  for (let x = e, depth = 0; x != null && depth < 4; x = x.cause, depth++) {
    if (typeof x.code === 'string' && SYSTEM_CODE.test(x.code)) return x.code;
    for (const inner of Array.isArray(x.errors) ? x.errors : []) {
      if (typeof inner?.code === 'string' && SYSTEM_CODE.test(inner.code)) return inner.code; // an AggregateError: one per address tried
    }
  }
  return null;
}

/** A fetch over the Unix socket at `socketPath` (node:http), for the requests this client makes. */
function unixSocketFetch(socketPath) {
  return async (url, init = {}) => {
    const { request } = await import('node:http');
    const { pathname, search } = new URL(url);
    const { signal } = init;
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const onAbort = () => req.destroy(signal.reason);
      const fail = (e) => {
        signal?.removeEventListener('abort', onAbort);
        reject(e);
      };
      const req = request(
        { socketPath, path: pathname + search, method: init.method ?? 'GET', headers: { host: 'localhost', ...init.headers } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('error', fail);
          res.on('close', () => res.complete || fail(signal?.reason ?? Object.assign(new Error('the connection closed mid-answer'), { code: 'ECONNRESET' })));
          res.on('end', () => {
            signal?.removeEventListener('abort', onAbort);
            const headers = new Headers();
            for (const [k, v] of Object.entries(res.headers)) for (const one of [v].flat()) headers.append(k, one);
            const empty = res.statusCode === 204 || res.statusCode === 304;
            resolve(new Response(empty ? null : Buffer.concat(chunks), { status: res.statusCode, statusText: res.statusMessage, headers }));
          });
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', fail);
      req.end(init.body);
    });
  };
}

let shared = null;
const client = () => (shared ??= new GpupipeClient());

/** `uri()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const uri = (src, opts) => client().uri(src, opts);
/** `imageUrl()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const imageUrl = (src, opts) => client().imageUrl(src, opts);
/** `schedule()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const schedule = (sources, opts) => client().schedule(sources, opts);
