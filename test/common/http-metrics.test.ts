// The daemons' /metrics endpoint: the whole registry by default, or only the metrics named with
// `name[]=` (a poller watching one counter does not run every gauge's collect), and a clear 400
// for a name that is not registered.
import test from 'ava';
import { Counter, Gauge, Registry } from 'prom-client';
import { startHttpServer } from '../../src/common/http.js';
import { silentLogger } from '../../src/common/log.js';

test('/metrics?name[]= serves only the named metrics and skips the others\' collect', async (t) => {
  const registry = new Registry();
  const done = new Counter({ name: 'demo_done_total', help: 'Done.', registers: [registry] });
  let collected = 0;
  new Gauge({ name: 'demo_expensive', help: 'Costly to collect.', registers: [registry], collect() { collected++; this.set(7); } });
  done.inc(3);
  const http = await startHttpServer('127.0.0.1', 0, { registry, log: silentLogger(), ready: () => true });
  t.teardown(() => http.close());
  const base = `http://127.0.0.1:${http.port}/metrics`;

  const all = await (await fetch(base)).text();
  t.regex(all, /^demo_done_total 3$/m);
  t.regex(all, /^demo_expensive 7$/m);
  t.is(collected, 1);

  const one = await fetch(`${base}?name[]=demo_done_total`);
  t.is(one.status, 200);
  const text = await one.text();
  t.regex(text, /^demo_done_total 3$/m);
  t.notRegex(text, /demo_expensive/);
  t.is(collected, 1, 'the unnamed gauge was not collected');

  const both = await (await fetch(`${base}?name=demo_done_total&name=demo_expensive`)).text();
  t.regex(both, /^demo_done_total 3$/m);
  t.regex(both, /^demo_expensive 7$/m);

  const bad = await fetch(`${base}?name[]=demo_done_total&name[]=no_such_metric`);
  t.is(bad.status, 400);
  t.regex(await bad.text(), /unknown metric "no_such_metric"/);
});
