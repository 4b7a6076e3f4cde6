// Types of the Node client of `gpupipe serve` (gpupipe.mjs). Hand-written and hand-checked against
// gpupipe.mjs (test/client.test.mjs checks that the exported values match); keep the two in step.

/** What URIs to produce: pass through what already fits (else JPEG, PNG for alpha), the source bytes as they are, or always re-encode. */
export type OutputFormat = 'auto' | 'passthrough' | 'jpeg' | 'png';

/** Output settings of a request; each defaults to the service's config. */
export interface FrameOptions {
  format?: OutputFormat;
  /** The box to fit the frame into: `'1920x1080'` or `[1920, 1080]`. */
  size?: string | readonly [number, number];
  /** JPEG quality, 1 to 100. */
  quality?: number;
}

/** Which frame of a video clip: its display index (from 0), or the one shown at `t` seconds (the last frame
 * whose timestamp is <= t, as a browser shows at `currentTime = t`). Exactly one of the two. */
export type FramePick = { frame: number; t?: undefined } | { t: number; frame?: undefined };

/** A frame of a video clip: the clip's path (`src`, relative to a `--root`) and which frame. */
export type VideoFrameRef = { src: string } & FramePick;

/** A frame request in one object: a frame file (`{ src }`) or a video clip's frame, with its output settings. */
export type FrameRequest = FrameOptions & { src: string } & (FramePick | { frame?: undefined; t?: undefined });

/** Options of the positional form `(src, options)`: output settings, and `frame` or `t` when `src` is a video clip. */
export type FrameRequestOptions = FrameOptions & (FramePick | { frame?: undefined; t?: undefined });

/** A schedule's source: a frame file's path, or a video clip's frame. */
export type ScheduleSource = string | VideoFrameRef;

export interface ClientOptions {
  /** The service, default `$GPUPIPE_URL` or `http://127.0.0.1:8765`. Ignored with `socketPath`. */
  baseUrl?: string;
  /** The service's Unix socket (`gpupipe serve --socket PATH`) instead of `baseUrl`; `imageUrl()` needs TCP. */
  socketPath?: string;
  /** Per request (and its retries each), default 120000. */
  timeoutMs?: number;
  /** Retries of a 503 answer or a refused connection, default 3. */
  retries?: number;
  /** Wait before retrying a refused connection, or a 503 without `Retry-After`, default 1000. */
  retryDelayMs?: number;
  /** A fetch implementation, default the global one (node:http for `socketPath`). */
  fetch?: typeof fetch;
}

/** `type` of a request that got no answer: the connection failed, or no answer came within `timeoutMs`. */
export type TransportErrorType = 'ConnectionError' | 'Timeout';

/**
 * A failure of a request to the service: an error answer (`status`, the service's `type` such as
 * `FrameNotFound`, `PathRefused`, `BadParameter`, `QueueFull`, `FrameChanged`, and `src`), or no answer
 * (`status` null, `type` `'ConnectionError'` with the system `code` such as `ECONNREFUSED`, or `'Timeout'`).
 */
export declare class GpupipeError extends Error {
  constructor(
    status: number | null,
    type: string,
    message: string,
    src?: string | null,
    retryAfter?: number | null,
    options?: { code?: string | null; cause?: unknown },
  );
  readonly name: 'GpupipeError';
  /** The HTTP status, or null when no answer came. */
  readonly status: number | null;
  /** The service's error type, `'HTTPError'` for an answer without a JSON body, or a {@link TransportErrorType}. */
  readonly type: string;
  /** The frame the error is about, when there is one. */
  readonly src: string | null;
  /** The answer's `Retry-After` in seconds (503 answers). */
  readonly retryAfter: number | null;
  /** The system error code of a `'ConnectionError'` (`ECONNREFUSED`, `ENOENT`, ...), else null. */
  readonly code: string | null;
}

/** A frame's encoded image. */
export interface FrameImage {
  bytes: Uint8Array;
  /** `image/jpeg` or `image/png`. */
  contentType: string | null;
}

/** An open schedule; `close()` withdraws it (once). Also `Symbol.asyncDispose` where the runtime has it (`await using`). */
export interface Schedule {
  readonly id: string;
  /** The paths of sources under no root, each once, left out of the schedule (the first 100, in order). */
  readonly missing: readonly string[];
  /** How many sources were missing, all of them. */
  readonly missingCount: number;
  close(): Promise<void>;
}

/** The service's `/healthz` answer. */
export interface Health {
  status: 'ok' | 'stopping';
  pipelines: { name: string; backend: 'gpu' | 'cpu' }[];
  queue_depth: number;
  schedules: number;
  memory_pressure: boolean;
  /** The allocator tuning's state, in words. */
  allocator: string;
}

/** A client of one `gpupipe serve` instance. Every method rejects with a {@link GpupipeError}. */
export declare class GpupipeClient {
  constructor(options?: ClientOptions);
  /** The service's URL (`http://localhost` with `socketPath`). */
  readonly baseUrl: string;
  readonly socketPath: string | null;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  /**
   * The URL of a frame's image, for a page's `<img src>` (URL mode). Throws with `socketPath`.
   * `imageUrl('f.png', { size })`, `imageUrl('clip.mp4', { t: 1.5 })` or, in one object,
   * `imageUrl({ src: 'clip.mp4', t: 1.5, size: '1920x1080' })`.
   */
  imageUrl(src: string | FrameRequest, opts?: FrameRequestOptions): string;
  /** The frame's `data:image/...;base64,` URI; arguments as {@link imageUrl}. */
  uri(src: string | FrameRequest, opts?: FrameRequestOptions): Promise<string>;
  /** The frame's encoded image; arguments as {@link imageUrl}. */
  image(src: string | FrameRequest, opts?: FrameRequestOptions): Promise<FrameImage>;
  /** Declare the order in which frames will be requested: frame paths and video clips' frames. */
  schedule(sources: Iterable<ScheduleSource>, opts?: FrameOptions): Promise<Schedule>;
  /** The service's `/healthz` answer. */
  health(): Promise<Health>;
}

/** `uri()` on a client of `$GPUPIPE_URL` (or http://127.0.0.1:8765). */
export declare function uri(src: string | FrameRequest, opts?: FrameRequestOptions): Promise<string>;
/** `imageUrl()` on a client of `$GPUPIPE_URL` (or http://127.0.0.1:8765). */
export declare function imageUrl(src: string | FrameRequest, opts?: FrameRequestOptions): string;
/** `schedule()` on a client of `$GPUPIPE_URL` (or http://127.0.0.1:8765). */
export declare function schedule(sources: Iterable<ScheduleSource>, opts?: FrameOptions): Promise<Schedule>;
