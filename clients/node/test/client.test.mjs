// The Node client against a live `gpupipe serve` (started by tests/test_serve_node.py, which sets
// GPUPIPE_URL and GPUPIPE_TEST_ROOT, the --root holding f0.png, f1.jpg, bad.png, escape.png and
// changing.png, which changes while the service reads it the first time).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { GpupipeClient, GpupipeError, uri, imageUrl, schedule } from '../gpupipe.mjs';

const URL_ = process.env.GPUPIPE_URL;
const ROOT = process.env.GPUPIPE_TEST_ROOT;
const skip = !URL_ || !ROOT ? 'needs a live service: run tests/test_serve_node.py' : false;

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

test('schedule() opens and closes, or says the service has none', { skip }, async () => {
  const gp = new GpupipeClient({ baseUrl: URL_ });
  if (process.env.GPUPIPE_TEST_SCHEDULES === '501') {
    await assert.rejects(schedule(['f0.png']), (e) => e.status === 501 && e.type === 'SchedulesUnsupported');
    return;
  }
  const s = await gp.schedule(['f0.png', 'f1.jpg', 'f0.png'], { size: [1920, 1080] });
  assert.equal(typeof s.id, 'string');
  await s.close();
  await s.close(); // once only
  await assert.rejects(gp.schedule(['escape.png']), (e) => e.status === 403);
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
