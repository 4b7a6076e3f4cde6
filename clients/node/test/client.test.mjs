// The Node client against a live `gpupipe serve` (started by tests/test_serve_node.py, which sets
// GPUPIPE_URL and GPUPIPE_TEST_ROOT, the --root holding f0.png, f1.jpg, bad.png, escape.png,
// clip.mp4 (48 frames of 320x180 at 30 fps, H.264) and changing.png, which changes while the service
// reads it the first time, and GPUPIPE_TEST_SOCKET,
// a second service on a Unix socket), and without one: refused connections, timeouts, the types.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { GpupipeClient, GpupipeError, uri, imageUrl, schedule } from '../gpupipe.mjs';

const URL_ = process.env.GPUPIPE_URL;
const ROOT = process.env.GPUPIPE_TEST_ROOT;
const SOCKET = process.env.GPUPIPE_TEST_SOCKET;
const skip = !URL_ || !ROOT ? 'needs a live service: run tests/test_serve_node.py' : false;
const skipSocket = !SOCKET || !ROOT ? 'needs a live service on a Unix socket: run tests/test_serve_node.py' : false;

test('uri() is the data URI of the file', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const want = 'data:image/png;base64,' + readFileSync(join(ROOT, 'f0.png')).toString('base64');
  assert.equal(await gp.uri('f0.png'), want);
  assert.equal(await uri('f0.png'), want); // module-level function on $GPUPIPE_URL
});

test('uri() with output settings transcodes', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const u = await gp.uri('f0.png', { format: 'jpeg', size: [64, 64], quality: 70 });
  assert.match(u, /^data:image\/jpeg;base64,\/9j\//);
});

test('image() and imageUrl()', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const { bytes, contentType } = await gp.image('f1.jpg');
  assert.equal(contentType, 'image/jpeg');
  assert.deepEqual(Buffer.from(bytes), readFileSync(join(ROOT, 'f1.jpg')));
  const u = gp.imageUrl('dir/a b.png', { size: '1920x1080', format: 'auto' });
  assert.equal(u, `${URL_}/v1/image?src=dir%2Fa+b.png&format=auto&size=1920x1080`);
  assert.equal(imageUrl('f1.jpg'), `${URL_}/v1/image?src=f1.jpg`);
  const res = await fetch(gp.imageUrl('f1.jpg'));
  assert.equal(res.status, 200);
  assert.ok(res.headers.get('etag'));
});

test('errors carry status, type and src', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const cases = [['missing.png', 404, 'FrameNotFound'], ['bad.png', 422, 'FrameDecodeError'], ['escape.png', 403, 'PathRefused'],
    ['../x.png', 403, 'PathRefused']];
  for (const [src, status, type] of cases) {
    await assert.rejects(gp.uri(src), (e) => e instanceof GpupipeError && e.status === status && e.type === type && e.src === src);
  }
  await assert.rejects(gp.uri('f0.png', { size: 'big' }), (e) => e.status === 400 && e.type === 'BadParameter');
  assert.throws(() => gp.imageUrl(''), TypeError);
});

test('schedule() opens and closes', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const s = await gp.schedule(['f0.png', 'f1.jpg', 'f0.png'], { size: [1920, 1080] });
  assert.equal(typeof s.id, 'string');
  assert.deepEqual([s.missing, s.missingCount], [[], 0]);
  await s.close();
  await s.close(); // once only
  const partial = await gp.schedule(['f0.png', 'gone.png', 'f1.jpg', 'gone.png']); // the missing frame is left out, and named
  assert.deepEqual([partial.missing, partial.missingCount], [['gone.png'], 1]);
  await partial.close();
  await assert.rejects(gp.schedule(['escape.png']), (e) => e.status === 403);
});

test('video frames: uri({ src, frame | t }), the positional form, image() and imageUrl()', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const byIndex = await gp.uri({ src: 'clip.mp4', frame: 15, size: '160x90' });
  assert.match(byIndex, /^data:image\/jpeg;base64,\/9j\//); // auto: a video frame comes out as JPEG
  assert.equal(await gp.uri({ src: 'clip.mp4', t: 0.5, size: '160x90' }), byIndex); // the frame shown at t = 15 / 30 s
  assert.equal(await gp.uri({ src: 'clip.mp4', t: 0.51 }, { size: [160, 90] }), byIndex); // between frames: the earlier one
  assert.equal(await gp.uri('clip.mp4', { frame: 15, size: [160, 90] }), byIndex); // the positional form
  assert.equal(await uri({ src: 'clip.mp4', t: 15 / 30, size: '160x90' }), byIndex);
  assert.notEqual(await gp.uri({ src: 'clip.mp4', frame: 16, size: '160x90' }), byIndex);

  const u = gp.imageUrl({ src: 'clip.mp4', t: 1 / 30, size: '1920x1080' });
  assert.equal(u, `${URL_}/v1/image?src=clip.mp4&t=0.03333333333333333&size=1920x1080`);
  assert.equal(imageUrl('clip.mp4', { frame: 2 }), `${URL_}/v1/image?src=clip.mp4&frame=2`);
  const res = await fetch(u);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/jpeg');
  const same = await fetch(gp.imageUrl({ src: 'clip.mp4', frame: 1, size: '1920x1080' }), { headers: { 'if-none-match': res.headers.get('etag') } });
  assert.equal(same.status, 304); // t and frame of one frame share its ETag
  const { contentType } = await gp.image({ src: 'clip.mp4', frame: 1, format: 'png' });
  assert.equal(contentType, 'image/png');

  await assert.rejects(gp.uri({ src: 'clip.mp4', frame: 48 }), (e) => e instanceof GpupipeError && e.status === 404
    && e.type === 'FrameOutOfRange' && e.src === 'clip.mp4' && /48 frames/.test(e.message));
  await assert.rejects(gp.uri({ src: 'clip.mp4', t: 9 }), (e) => e.status === 404 && /duration 1.6 s/.test(e.message));
  await assert.rejects(gp.uri({ src: 'f0.png', frame: 0 }), (e) => e.status === 400 && /PNG image/.test(e.message));
  await assert.rejects(gp.uri('clip.mp4'), (e) => e.status === 400 && /add frame=/.test(e.message));
  assert.throws(() => gp.imageUrl({ src: 'clip.mp4', frame: 1, t: 0 }), /not both/);
  for (const bad of [{ frame: -1 }, { frame: 1.5 }, { frame: '2' }, { t: -0.1 }, { t: NaN }, { t: Infinity }, { t: '0.5' }]) {
    assert.throws(() => gp.imageUrl({ src: 'clip.mp4', ...bad }), TypeError, JSON.stringify(bad));
    await assert.rejects(gp.uri('clip.mp4', bad), TypeError);
  }
});

test('schedule() takes video frames beside frame paths', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const frames = Array.from({ length: 12 }, (_, i) => ({ src: 'clip.mp4', t: i / 30 }));
  const s = await gp.schedule(['f0.png', { src: 'clip.mp4', frame: 0 }, ...frames, { src: 'gone.mp4', frame: 3 }, { src: 'gone.mp4', t: 0 }],
    { size: '160x90' });
  assert.deepEqual([s.missing, s.missingCount], [['gone.mp4'], 1]); // a missing clip is named once
  await s.close();
  await assert.rejects(gp.schedule([{ src: 'clip.mp4' }]), /needs frame or t/);
  await assert.rejects(gp.schedule([{ src: 'clip.mp4', frame: 1, t: 0 }]), /not both/);
  await assert.rejects(gp.schedule([{ src: 'f1.jpg', t: 0 }]), (e) => e.status === 400 && /JPEG image/.test(e.message));
});

test('a frame changed while being read (503 + Retry-After) is retried', { skip }, async () => {
  // tests/test_serve_node.py makes changing.png change under its first read.
  const gp = new GpupipeClient({ baseUrl: URL_ });
  const want = 'data:image/png;base64,' + readFileSync(join(ROOT, 'changing.png')).toString('base64');
  assert.equal(await gp.uri('changing.png'), want);
});

test('health()', { skip }, async () => {
  const h = await new GpupipeClient({ baseUrl: URL_ }).health();
  assert.equal(h.status, 'ok');
});

test('503 answers are retried after Retry-After', async () => {
  let calls = 0;
  const fake = async () => {
    calls += 1;
    if (calls === 1) {
      return new Response(JSON.stringify({ error: 'full', type: 'QueueFull', src: 'a.png' }), { status: 503, headers: { 'retry-after': '0' } });
    }
    return new Response('data:image/png;base64,AAAA', { status: 200 });
  };
  const gp = new GpupipeClient({ baseUrl: 'http://127.0.0.1:9', fetch: fake });
  assert.equal(await gp.uri('a.png'), 'data:image/png;base64,AAAA');
  assert.equal(calls, 2);
  const never = new GpupipeClient({ baseUrl: 'http://127.0.0.1:9', retries: 0, fetch: async () => new Response('x', { status: 503 }) });
  await assert.rejects(never.uri('a.png'), (e) => e.status === 503 && e.type === 'HTTPError');
});

/** A port on 127.0.0.1 where nothing listens (connections are refused). */
async function closedPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('a refused connection is a GpupipeError (ConnectionError), retried like a 503', async () => {
  let calls = 0;
  const counting = (url, init) => {
    calls += 1;
    return fetch(url, init);
  };
  const gp = new GpupipeClient({ baseUrl: `http://127.0.0.1:${await closedPort()}`, retries: 2, retryDelayMs: 1, fetch: counting });
  await assert.rejects(gp.uri('a.png'), (e) => e instanceof GpupipeError && e.type === 'ConnectionError' && e.status === null
    && e.code === 'ECONNREFUSED' && /is gpupipe serve running/.test(e.message) && e.cause instanceof Error);
  assert.equal(calls, 3); // the first try and 2 retries

  calls = 0;
  const refusedOnce = async () => {
    calls += 1;
    if (calls === 1) throw new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    return new Response('data:image/png;base64,AAAA', { status: 200 });
  };
  const back = new GpupipeClient({ baseUrl: 'http://127.0.0.1:9', retryDelayMs: 1, fetch: refusedOnce });
  assert.equal(await back.uri('a.png'), 'data:image/png;base64,AAAA'); // the service came back
  assert.equal(calls, 2);
});

test('no answer within timeoutMs is a GpupipeError (Timeout), not retried', async () => {
  const held = [];
  const silent = createServer((sock) => held.push(sock)); // accepts, never answers
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  let calls = 0;
  const counting = (url, init) => {
    calls += 1;
    return fetch(url, init);
  };
  try {
    const gp = new GpupipeClient({ baseUrl: `http://127.0.0.1:${silent.address().port}`, timeoutMs: 150, retryDelayMs: 1, fetch: counting });
    await assert.rejects(gp.uri('a.png'), (e) => e instanceof GpupipeError && e.type === 'Timeout' && e.status === null
      && /within 150 ms/.test(e.message));
    assert.equal(calls, 1);
  } finally {
    for (const sock of held) sock.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});

test('socketPath: the service on a Unix socket', { skip: skipSocket }, async () => {
  const gp = new GpupipeClient({ socketPath: SOCKET });
  const want = 'data:image/png;base64,' + readFileSync(join(ROOT, 'f0.png')).toString('base64');
  assert.equal(await gp.uri('f0.png'), want);
  const { bytes, contentType } = await gp.image('f1.jpg');
  assert.equal(contentType, 'image/jpeg');
  assert.deepEqual(Buffer.from(bytes), readFileSync(join(ROOT, 'f1.jpg')));
  assert.equal((await gp.health()).status, 'ok');
  await assert.rejects(gp.uri('missing.png'), (e) => e instanceof GpupipeError && e.status === 404 && e.type === 'FrameNotFound');
  const s = await gp.schedule(['f0.png', 'f1.jpg']);
  await s.close();
  assert.throws(() => gp.imageUrl('f0.png'), /Unix socket/);
});

test('socketPath: no answer within timeoutMs is a GpupipeError (Timeout)', async () => {
  const path = join(tmpdir(), `gpupipe-silent-${process.pid}.sock`);
  const held = [];
  const silent = createServer((sock) => held.push(sock)); // accepts, never answers
  await new Promise((resolve) => silent.listen(path, resolve));
  try {
    const gp = new GpupipeClient({ socketPath: path, timeoutMs: 150 });
    await assert.rejects(gp.uri('a.png'), (e) => e instanceof GpupipeError && e.type === 'Timeout' && e.message.includes(`unix:${path}`));
  } finally {
    for (const sock of held) sock.destroy();
    await new Promise((resolve) => silent.close(resolve)); // removes the socket file
  }
});

test('socketPath: no socket there is a GpupipeError (ConnectionError, ENOENT), retried', async () => {
  const gp = new GpupipeClient({ socketPath: join(tmpdir(), `gpupipe-no-such-${process.pid}.sock`), retries: 1, retryDelayMs: 1 });
  await assert.rejects(gp.uri('a.png'), (e) => e instanceof GpupipeError && e.type === 'ConnectionError' && e.code === 'ENOENT'
    && e.message.includes('unix:'));
});

test('gpupipe.d.ts declares exactly the values the module exports', async () => {
  const dts = readFileSync(new URL('../gpupipe.d.ts', import.meta.url), 'utf8');
  const declared = [...dts.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  const mod = await import('../gpupipe.mjs');
  assert.deepEqual(declared, Object.keys(mod).sort());
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.types, './gpupipe.d.ts');
  assert.ok(pkg.files.includes('gpupipe.d.ts'));
});
