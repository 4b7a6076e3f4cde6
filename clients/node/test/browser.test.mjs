// One frame injected into headless Chromium the way HTML renderers do it (set an <img>'s src, await
// img.decode()): the renderer's own data URI, the service's data URIs, and URL mode. Run by
// tests/test_serve_browser.py, which starts the service and sets GPUPIPE_URL, GPUPIPE_TEST_ROOT
// (f0.png, f1.jpg, bad.png) and CHROMIUM (the browser binary, e.g. /usr/bin/chromium).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { GpupipeClient } from '../gpupipe.mjs';

const { GPUPIPE_URL, GPUPIPE_TEST_ROOT: ROOT, CHROMIUM } = process.env;
const skip = !GPUPIPE_URL || !ROOT || !CHROMIUM ? 'needs a live service and CHROMIUM: run tests/test_serve_browser.py' : false;

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
    // a frame the service refuses does not decode, and the page can tell
    assert.deepEqual(await show(gp.imageUrl('bad.png')), { error: 'EncodingError' });
    const shot = await page.screenshot({ type: 'png' });
    assert.ok(shot.length > 1000);
  } finally {
    await browser.close();
  }
});
