// One frame injected into headless Chromium the way HTML renderers do it (set an <img>'s src, await
// img.decode()): the renderer's own data URI, the service's data URIs, and URL mode; and URL-mode
// frames drawn into a canvas (<img crossOrigin="anonymous">, getImageData) by a page of another
// loopback origin. Run by tests/test_serve_node.py, which starts the service and sets GPUPIPE_URL,
// GPUPIPE_TEST_ROOT (f0.png, f1.jpg, bad.png, clip.mp4), CHROMIUM (the browser binary, e.g. /usr/bin/chromium)
// and, for the canvas test, GPUPIPE_URL_NO_CORS (a second service with serve.cors_origins: []).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

import { GpupipeClient } from '../gpupipe.mjs';

const { GPUPIPE_URL, GPUPIPE_TEST_ROOT: ROOT, CHROMIUM } = process.env;
const skip = !GPUPIPE_URL || !ROOT || !CHROMIUM ? 'needs a live service and CHROMIUM: run tests/test_serve_node.py' : false;

// Flags for a root user in a container with no network beyond loopback.
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions'];

test('frames reach an <img> in headless Chromium by data URI and by URL', { skip, timeout: 120_000 }, async () => {
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1920, height: 1080 });
    await page.setContent('<html><body style="margin:0;background:#000"><img id="f" style="width:1920px;height:1080px;object-fit:contain"></body></html>');
    const show = (src) => page.evaluate(async (s) => {
      const img = document.getElementById('f');
      img.src = s;
      try {
        await img.decode();
      } catch (e) {
        return { error: String(e && e.name) };
      }
      return { size: [img.naturalWidth, img.naturalHeight] };
    }, src);
    const gp = new GpupipeClient({ baseUrl: GPUPIPE_URL });

    // 1. the renderer's own path: read the file, base64 it in Node, pass the data URI to the page
    const own = 'data:image/png;base64,' + readFileSync(join(ROOT, 'f0.png')).toString('base64');
    assert.deepEqual(await show(own), { size: [640, 360] });
    // 2. the service's data URIs: passthrough, and auto fitted to a 320x180 composition
    assert.equal(await gp.uri('f0.png', { format: 'passthrough' }), own);
    assert.deepEqual(await show(await gp.uri('f0.png', { format: 'passthrough' })), { size: [640, 360] });
    assert.deepEqual(await show(await gp.uri('f1.jpg', { size: '320x180' })), { size: [320, 180] });
    // 3. URL mode: the page loads the image bytes from the service itself
    assert.deepEqual(await show(gp.imageUrl('f0.png')), { size: [640, 360] });
    assert.deepEqual(await show(gp.imageUrl('f1.jpg', { format: 'png', size: [160, 90] })), { size: [160, 90] });
    // 4. a video clip's frame, decoded by the service (no frames extracted to files), fitted and never upscaled
    assert.deepEqual(await show(gp.imageUrl({ src: 'clip.mp4', t: 0.5, size: '1920x1080' })), { size: [320, 180] });
    // a frame the service refuses does not decode, and the page can tell
    assert.deepEqual(await show(gp.imageUrl('bad.png')), { error: 'EncodingError' });
    const shot = await page.screenshot({ type: 'png' });
    assert.ok(shot.length > 1000);
  } finally {
    await browser.close();
  }
});

// A page served from http://localhost:PORT (another origin than the service's 127.0.0.1:PORT).
async function pageServer() {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><html><body><canvas id="c" width="64" height="36"></canvas></body></html>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://localhost:${server.address().port}/`, close: () => new Promise((resolve) => server.close(resolve)) };
}

const { GPUPIPE_URL_NO_CORS } = process.env;
const skipCanvas = skip || (!GPUPIPE_URL_NO_CORS ? 'needs GPUPIPE_URL_NO_CORS: run tests/test_serve_node.py' : false);

test('URL-mode frames draw into a canvas that getImageData can read (CORS)', { skip: skipCanvas, timeout: 120_000 }, async () => {
  const { default: puppeteer } = await import('puppeteer-core');
  const site = await pageServer();
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(site.url);
    assert.equal(await page.evaluate(() => location.origin), new URL(site.url).origin);
    // Load an <img> (with or without crossOrigin), draw it into the canvas and read its pixels back.
    const draw = (src, crossOrigin) => page.evaluate(async (s, co) => {
      const img = new Image();
      if (co) img.crossOrigin = co;
      img.src = s;
      try {
        await img.decode();
      } catch (e) {
        return { load: String(e && e.name) };
      }
      const ctx = document.getElementById('c').getContext('2d');
      ctx.clearRect(0, 0, 64, 36);
      ctx.drawImage(img, 0, 0, 64, 36);
      try {
        const px = ctx.getImageData(0, 0, 64, 36).data;
        let sum = 0;
        for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
        return { size: [img.naturalWidth, img.naturalHeight], opaque: px[3] === 255, lit: sum > 0 };
      } catch (e) {
        return { read: String(e && e.name) };
      }
    }, src, crossOrigin);
    const gp = new GpupipeClient({ baseUrl: GPUPIPE_URL });
    assert.deepEqual(await draw(gp.imageUrl('f0.png'), 'anonymous'), { size: [640, 360], opaque: true, lit: true });
    assert.deepEqual(await draw(gp.imageUrl('f1.jpg', { size: '320x180' }), 'anonymous'), { size: [320, 180], opaque: true, lit: true });
    // Without CORS headers: a crossOrigin image does not load, and one without crossOrigin taints the canvas.
    const off = new GpupipeClient({ baseUrl: GPUPIPE_URL_NO_CORS });
    assert.deepEqual(await draw(off.imageUrl('f0.png'), 'anonymous'), { load: 'EncodingError' });
    assert.deepEqual(await draw(off.imageUrl('f0.png'), null), { read: 'SecurityError' });
  } finally {
    await browser.close();
    await site.close();
  }
});
