// An SVG referencing an external URL and local files is rasterised without fetching or reading
// any of them: a local HTTP server sees no request, and a local red image leaves no red pixel.
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import sharp from 'sharp';
import { sanitizeSvg } from '../../src/media/limits.js';
import { resolveMediaOptions } from '../../src/media/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { getThumb, put } from './helpers.js';

test('an SVG referencing an external URL and local files: nothing is fetched or read', async (t) => {
  const requests: string[] = [];
  const web = createServer((req, res) => {
    requests.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'image/png' });
    res.end();
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => web.close(() => resolve())));
  const port = (web.address() as { port: number }).port;
  const dir = tempDir(t);
  // A solid red local image: if the rasteriser read it, red would cover the canvas.
  const secret = join(dir, 'secret.png');
  writeFileSync(secret, await sharp({ create: { width: 400, height: 400, channels: 3, background: '#f00' } }).png().toBuffer());
  writeFileSync(join(dir, 'style.css'), 'rect { fill: #f00 !important; }');
  const base = `http://127.0.0.1:${port}`;
  const svg = `<?xml version="1.0"?>
<?xml-stylesheet href="${base}/sheet.css" type="text/css"?>
<!DOCTYPE svg [ <!ENTITY leak SYSTEM "file://${secret}"> ]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="400" height="400">
  <style>@import url("${base}/import.css"); @import "file://${join(dir, 'style.css')}";</style>
  <defs><linearGradient id="g"><stop offset="0" stop-color="#0a0"/><stop offset="1" stop-color="#0a0"/></linearGradient></defs>
  <rect width="400" height="400" fill="url(#g)"/>
  <image x="0" y="0" width="400" height="400" href="${base}/remote.png"/>
  <image x="0" y="0" width="400" height="400" xlink:href="file://${secret}"/>
  <image x="0" y="0" width="400" height="400" xlink:href="secret.png"/>
  <rect width="400" height="400" style="fill: url(${base}/fill.svg#p)" opacity="0.5"/>
  <use href="${base}/sprite.svg#icon"/>
  <text>&leak;</text>
</svg>`;
  writeFileSync(join(dir, 'drawing.svg'), svg);
  const server = await startServer(t);
  const { version } = await put(server, server.token, dir, '/art/drawing.svg', Buffer.from(svg));
  const res = await getThumb(server, server.token, '/art/drawing.svg', 512, version);
  t.is(res.status, 200, await res.clone().text());
  const body = Buffer.from(await res.arrayBuffer());
  const { data, info } = await sharp(body).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  t.deepEqual([info.width, info.height], [400, 400]);
  let red = 0;
  for (let i = 0; i < data.length; i += 3) if (data[i]! > 150 && data[i + 1]! < 100) red++;
  t.is(red, 0, 'pixels from the local file or stylesheet reached the output');
  t.deepEqual(requests, [], 'the rasteriser fetched external URLs');
});

test('sanitizeSvg keeps in-document references only; refuse mode refuses every SVG', (t) => {
  const svg = Buffer.from(`<?xml version="1.0"?><?xml-stylesheet href="http://x/a.css"?><!DOCTYPE svg [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><style>@import url(http://x/b.css);</style>
<use href="#ok"/><image xlink:href="file:///etc/passwd"/><image src='data:image/svg+xml,&lt;svg/&gt;'/><rect fill="url(#grad)" style="fill:url('http://x/c.svg#p')"/>&e;</svg>`);
  const out = sanitizeSvg(svg, resolveMediaOptions()).toString();
  for (const bad of ['http://x/', 'file://', 'data:', '@import', 'ENTITY', '&e;', 'xml-stylesheet']) t.false(out.includes(bad), `${bad} survived: ${out}`);
  t.true(out.includes('href="#ok"'));
  t.true(out.includes('url(#grad)'));
  t.true(out.includes('xmlns="http://www.w3.org/2000/svg"'), 'namespace declarations are not references');
  const refused = t.throws(() => sanitizeSvg(svg, resolveMediaOptions({ svg: 'refuse' })));
  t.regex(refused.message, /^svg_refused: /);
});
