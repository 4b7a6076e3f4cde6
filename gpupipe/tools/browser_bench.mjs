// One renderer worker for gpupipe/tools/browser_bench.py: headless Chromium (puppeteer-core, the system
// browser) showing frames the way HTML renderers inject them: set an <img>'s src, await img.decode().
//
// The plan comes as JSON in $BENCH_PLAN: { mode, names, paths, times, schedule, passes, size, cacheBytes, url, chromium }.
//   own       the renderer's own path: Node reads the file, toString('base64'), page.evaluate(dataUri)
//             (with cacheBytes > 0, an in-process LRU of those data URIs, as the renderer keeps per worker)
//   uri       data URIs from the service (GET /v1/uri), passed through page.evaluate
//   url       URL mode: img.src = the service's /v1/image URL; the page fetches the bytes itself
//   video     URL mode for a video clip's frames: img.src = gp.imageUrl({ src: names[i], t: times[i], size });
//             with `schedule`, the frames are declared first (gp.schedule, on the clock), so the service reads ahead
// `size` (e.g. "1920x1080") asks the service for frames fitted to the composition (format auto);
// without it, passthrough. The page is a 1920x1080 composition: the <img> is shown at 1920x1080.
//
// Protocol on stdio: prints "ready" once the browser and page are up, waits for a line "go" on stdin,
// renders, prints one JSON line of results, waits for "quit" (or the end of stdin), closes the browser.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

import { GpupipeClient } from '../../clients/node/gpupipe.mjs';

const require = createRequire(new URL('../../clients/node/package.json', import.meta.url));
const puppeteer = require('puppeteer-core');

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions'];

const plan = JSON.parse(process.env.BENCH_PLAN);
const gp = new GpupipeClient({ baseUrl: plan.url });
const opts = plan.size ? { size: plan.size } : { format: 'passthrough' };

class UriCache { // the renderer's per-worker cache: data URIs bounded by bytes, least recently used out first
  constructor(maxBytes) { this.max = maxBytes; this.bytes = 0; this.map = new Map(); }
  get(k) { const v = this.map.get(k); if (v !== undefined) { this.map.delete(k); this.map.set(k, v); } return v; }
  set(k, v) {
    if (v.length > this.max) return;
    this.map.set(k, v); this.bytes += v.length;
    for (const [old, ov] of this.map) { if (this.bytes <= this.max) break; this.map.delete(old); this.bytes -= ov.length; }
  }
}
const cache = plan.cacheBytes > 0 ? new UriCache(plan.cacheBytes) : null;
const MIME = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg' };

async function ownUri(path) {
  const hit = cache?.get(path);
  if (hit !== undefined) return hit;
  const uri = `data:${MIME[path.split('.').pop().toLowerCase()]};base64,` + (await readFile(path)).toString('base64');
  cache?.set(path, uri);
  return uri;
}

async function source(i) {
  if (plan.mode === 'own') return ownUri(plan.paths[i]);
  if (plan.mode === 'uri') return gp.uri(plan.names[i], opts);
  if (plan.mode === 'video') return gp.imageUrl({ src: plan.names[i], t: plan.times[i], ...opts });
  return gp.imageUrl(plan.names[i], opts);
}

const rl = createInterface({ input: process.stdin });
const stdinLines = rl[Symbol.asyncIterator]();
async function waitFor(word) {
  for (;;) {
    const { value, done } = await stdinLines.next();
    if (done || value.trim() === word) return;
  }
}

const browser = await puppeteer.launch({ executablePath: plan.chromium, headless: true, args: ARGS, protocolTimeout: 600_000 });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1920, height: 1080 });
  await page.setContent('<html><body style="margin:0;background:#000"><img id="f" style="width:1920px;height:1080px;object-fit:contain"></body></html>');
  console.log('ready');
  await waitFor('go');
  const sched = plan.schedule ? await gp.schedule(plan.names.map((src, i) => ({ src, t: plan.times[i] })), opts) : null;
  const passes = [];
  let errors = 0;
  for (let p = 0; p < plan.passes; p++) {
    const t0 = performance.now();
    let shown = 0;
    for (let i = 0; i < plan.names.length; i++) {
      const src = await source(i);
      const ok = await page.evaluate(async (s) => {
        const img = document.getElementById('f');
        img.src = s;
        try { await img.decode(); return img.naturalWidth > 0; } catch { return false; }
      }, src);
      if (ok) shown++; else errors++;
    }
    passes.push({ seconds: (performance.now() - t0) / 1000, frames: shown });
  }
  await sched?.close();
  console.log(JSON.stringify({ passes, errors }));
  await waitFor('quit'); // the driver reads every process's CPU time before the browser goes away
} finally {
  rl.close();
  process.stdin.destroy();
  await browser.close();
}
