// Client of `gpupipe serve` for Node renderers (Node >= 18; global fetch, no dependencies).
//
//   import { GpupipeClient } from './gpupipe.mjs';
//   const gp = new GpupipeClient({ baseUrl: 'http://127.0.0.1:8765' });
//   const dataUri = await gp.uri('clip/frame_00001.png', { size: '1920x1080' });   // for page.evaluate
//   img.src = gp.imageUrl('clip/frame_00001.png');                                 // URL mode: no base64 at all
//   const sched = await gp.schedule(['clip/frame_00001.png', ...]);  ...  await sched.close();
//
// Frame paths are relative to one of the service's --root directories (or absolute inside one).
// Every error answer becomes a GpupipeError with the service's status, type and src; 503 answers
// (queue or byte budget full, or type FrameChanged: the frame's file changed while it was read) are
// retried after their Retry-After (at most 10 s), `retries` times, as the Python client does.

const DEFAULT_URL = 'http://127.0.0.1:8765';

/** An error answer of the service: `status` (HTTP), `type` (FrameNotFound, PathRefused, ...), `src`. */
export class GpupipeError extends Error {
  constructor(status, type, message, src = null, retryAfter = null) {
    super(`${status} ${type}: ${message}`);
    this.name = 'GpupipeError';
    this.status = status;
    this.type = type;
    this.src = src;
    this.retryAfter = retryAfter;
  }
}

function query(src, opts = {}) {
  if (typeof src !== 'string' || src === '') throw new TypeError('src must be a non-empty frame path');
  const q = new URLSearchParams({ src });
  if (opts.format != null) q.set('format', String(opts.format));
  if (opts.size != null) q.set('size', Array.isArray(opts.size) ? `${opts.size[0]}x${opts.size[1]}` : String(opts.size));
  if (opts.quality != null) q.set('quality', String(opts.quality));
  return q.toString();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client of one `gpupipe serve` instance. */
export class GpupipeClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the service, default $GPUPIPE_URL or http://127.0.0.1:8765
   * @param {number} [options.timeoutMs] per request, default 120000
   * @param {number} [options.retries] retries of a 503 answer (queue or budget full, frame changed while read), default 3
   * @param {typeof fetch} [options.fetch] a fetch implementation, default the global one
   */
  constructor({ baseUrl, timeoutMs = 120_000, retries = 3, fetch: fetchImpl } = {}) {
    this.baseUrl = String(baseUrl ?? globalThis.process?.env?.GPUPIPE_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.fetch = fetchImpl ?? globalThis.fetch;
    if (typeof this.fetch !== 'function') throw new Error('no fetch: use Node >= 18 or pass options.fetch');
  }

  async #request(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const init = { method, signal: AbortSignal.timeout(this.timeoutMs) };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers = { 'content-type': 'application/json' };
      }
      const res = await this.fetch(this.baseUrl + path, init);
      if (res.ok) return res;
      const err = await errorOf(res);
      if (res.status === 503 && attempt < this.retries) {
        await sleep(1000 * Math.min(err.retryAfter ?? 1, 10));
        continue;
      }
      throw err;
    }
  }

  /** The URL of a frame's image, for a page's `<img src>` (URL mode). Options: format, size ('WxH' or [w, h]), quality. */
  imageUrl(src, opts = {}) {
    return `${this.baseUrl}/v1/image?${query(src, opts)}`;
  }

  /** The frame's `data:image/...;base64,` URI (a string, for page.evaluate). */
  async uri(src, opts = {}) {
    return (await this.#request('GET', `/v1/uri?${query(src, opts)}`)).text();
  }

  /** The frame's encoded image: `{ bytes: Uint8Array, contentType }`. */
  async image(src, opts = {}) {
    const res = await this.#request('GET', `/v1/image?${query(src, opts)}`);
    return { bytes: new Uint8Array(await res.arrayBuffer()), contentType: res.headers.get('content-type') };
  }

  /**
   * Declare the order in which frames will be requested (the service evicts by next use and reads ahead).
   * Resolves to `{ id, close() }`; close() withdraws it (also `await using` where supported).
   */
  async schedule(sources, opts = {}) {
    const body = { sources: Array.from(sources) };
    for (const k of ['format', 'size', 'quality']) {
      if (opts[k] != null) body[k] = k === 'size' && Array.isArray(opts.size) ? `${opts.size[0]}x${opts.size[1]}` : opts[k];
    }
    const { id } = await (await this.#request('POST', '/v1/schedules', body)).json();
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      try {
        await this.#request('DELETE', `/v1/schedules/${encodeURIComponent(id)}`);
      } catch (e) {
        if (!(e instanceof GpupipeError && e.status === 404)) throw e;
      }
    };
    const handle = { id, close };
    if (Symbol.asyncDispose) handle[Symbol.asyncDispose] = close;
    return handle;
  }

  /** The service's /healthz answer. */
  async health() {
    return (await this.#request('GET', '/healthz')).json();
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

let shared = null;
const client = () => (shared ??= new GpupipeClient());

/** `uri()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const uri = (src, opts) => client().uri(src, opts);
/** `imageUrl()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const imageUrl = (src, opts) => client().imageUrl(src, opts);
/** `schedule()` on a client of $GPUPIPE_URL (or http://127.0.0.1:8765). */
export const schedule = (sources, opts) => client().schedule(sources, opts);
