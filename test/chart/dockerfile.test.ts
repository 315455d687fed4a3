// The Dockerfile cannot be built here; this keeps it consistent with the chart and the operator's
// pods: multi-stage on node:20-slim, numeric non-root user 10001, jemalloc preloaded, tini.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';

const ROOT = join(import.meta.dirname, '..', '..');
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

test('the image is multi-stage on node:20-slim and runs as the user the pods expect', (t) => {
  t.regex(dockerfile, /^ARG NODE_IMAGE=node:20-slim$/m);
  t.is([...dockerfile.matchAll(/^FROM /gm)].length, 2);
  t.regex(dockerfile, /^USER 10001:10001$/m);
  // The operator's pod spec and the chart's operator Deployment both run as 10001.
  t.regex(readFileSync(join(ROOT, 'src', 'operator', 'objects.ts'), 'utf8'), /runAsUser: 10001/);
  t.regex(readFileSync(join(ROOT, 'charts', 'cairn', 'templates', 'deployment.yaml'), 'utf8'), /runAsUser: 10001/);
});

test('the runtime preloads jemalloc, reaps with tini and ships bin, dist and proto', (t) => {
  t.regex(dockerfile, /LD_PRELOAD=\/usr\/local\/lib\/libjemalloc\.so\.2/);
  t.regex(dockerfile, /libjemalloc2/);
  t.regex(dockerfile, /ENTRYPOINT \["\/usr\/bin\/tini", "--", "node", "\/app\/bin\/cairn\.js"\]/);
  for (const dir of ['bin', 'dist', 'proto', 'node_modules']) t.regex(dockerfile, new RegExp(`COPY --from=build /src/${dir} `));
  t.regex(dockerfile, /npm prune --omit=dev/);
});
