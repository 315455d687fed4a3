// The chart's alert rules under promtool (Debian `prometheus`): `check rules` on the rendered
// PrometheusRule and `test rules` with a firing and a quiet case per alert.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parseAllDocuments, stringify } from 'yaml';
import { requireTool } from '../helpers/tools.js';
import { findHelm, requireHelm } from './helm.js';

const ROOT = join(import.meta.dirname, '..', '..');
const RUNBOOKS = 'https://github.com/cairn-dev/cairn/blob/main/docs/runbooks';

interface Rule { alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> }

function renderedGroups(): { name: string; rules: Rule[] }[] {
  const r = spawnSync(findHelm() ?? 'helm', ['template', 'cairn', join(ROOT, 'charts', 'cairn'), '-f', join(import.meta.dirname, 'values', 'full.yaml')], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(r.stderr);
  const rule = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind?: string; spec?: { groups: { name: string; rules: Rule[] }[] } } | null).find((o) => o?.kind === 'PrometheusRule');
  if (rule?.spec === undefined) throw new Error('no PrometheusRule rendered');
  return rule.spec.groups;
}

const alertCase = (alert: string, evalTime: string, series: { series: string; values: string }[], labels: Record<string, string> | null) => ({
  interval: '1m',
  input_series: series,
  alert_rule_test: [{
    eval_time: evalTime,
    alertname: alert,
    exp_alerts: labels === null ? [] : [{ exp_labels: labels, exp_annotations: { runbook_url: `${RUNBOOKS}/${alert}.md` } }],
  }],
});

const pvc = 'data-store-blocknode-0';
const CASES = [
  alertCase('CairnBlockNodeDown', '5m', [{ series: 'cairn_cluster_nodes{state="down"}', values: '0 0 1x10' }], { severity: 'critical' }),
  alertCase('CairnBlockNodeDown', '5m', [{ series: 'cairn_cluster_nodes{state="down"}', values: '0x10' }, { series: 'cairn_cluster_nodes{state="up"}', values: '3x10' }], null),
  alertCase('CairnUnderReplicatedPartitions', '12m', [{ series: 'cairn_blocknode_under_replicated_partitions{pod="store-blocknode-0"}', values: '3x20' }], { severity: 'warning' }),
  alertCase('CairnUnderReplicatedPartitions', '8m', [{ series: 'cairn_blocknode_under_replicated_partitions{pod="store-blocknode-0"}', values: '3x20' }], null),
  {
    interval: '5m',
    input_series: [
      { series: `kubelet_volume_stats_available_bytes{persistentvolumeclaim="${pvc}"}`, values: '39000000000-100000000x200' },
      { series: `kubelet_volume_stats_capacity_bytes{persistentvolumeclaim="${pvc}"}`, values: '100000000000x200' },
    ],
    alert_rule_test: [
      { eval_time: '10h', alertname: 'CairnBlockNodeDiskFilling', exp_alerts: [{ exp_labels: { severity: 'warning', persistentvolumeclaim: pvc }, exp_annotations: { runbook_url: `${RUNBOOKS}/CairnBlockNodeDiskFilling.md` } }] },
      { eval_time: '2h', alertname: 'CairnBlockNodeDiskFilling', exp_alerts: [] },
    ],
  },
  alertCase('CairnGrpcErrorRatio', '20m', [
    { series: 'grpc_server_handled_total{namespace="s",service="store-gateway",grpc_code="OK"}', values: '0+90x30' },
    { series: 'grpc_server_handled_total{namespace="s",service="store-gateway",grpc_code="Unavailable"}', values: '0+10x30' },
  ], { severity: 'warning', namespace: 's', service: 'store-gateway' }),
  alertCase('CairnGrpcErrorRatio', '20m', [
    { series: 'grpc_server_handled_total{namespace="s",service="store-gateway",grpc_code="OK"}', values: '0+99x30' },
    { series: 'grpc_server_handled_total{namespace="s",service="store-gateway",grpc_code="NotFound"}', values: '0+50x30' },
    { series: 'grpc_server_handled_total{namespace="s",service="store-gateway",grpc_code="Internal"}', values: '0+1x30' },
  ], null),
  alertCase('CairnThumbnailFailureRatio', '30m', [
    { series: 'cairn_media_jobs_completed_total{namespace="s",pod="store-media-0",format="jpeg"}', values: '0+80x40' },
    { series: 'cairn_media_jobs_failed_total{namespace="s",pod="store-media-0",reason="decode"}', values: '0+20x40' },
  ], { severity: 'warning', namespace: 's' }),
  alertCase('CairnThumbnailFailureRatio', '30m', [
    { series: 'cairn_media_jobs_completed_total{namespace="s",pod="store-media-0",format="jpeg"}', values: '0+98x40' },
    { series: 'cairn_media_jobs_failed_total{namespace="s",pod="store-media-0",reason="decode"}', values: '0+2x40' },
  ], null),
  alertCase('CairnThumbnailFailureRatio', '10m', [
    { series: 'cairn_media_jobs_completed_total{namespace="s",pod="store-media-0",format="jpeg"}', values: '0+50x40' },
    { series: 'cairn_media_jobs_failed_total{namespace="s",pod="store-media-0",reason="decode"}', values: '0+50x40' },
  ], null),
  alertCase('CairnMetadataUnavailable', '10m', [{ series: 'cairn_cluster_nodes{state="up"}', values: '3x20' }], { severity: 'critical' }),
  alertCase('CairnMetadataUnavailable', '10m', [{ series: 'cairn_cluster_epoch', values: '7x20' }], null),
];

test('promtool checks the rendered rules and every alert fires when it should and only then', (t) => {
  if (!requireTool(t, 'promtool', 'checks and unit-tests the chart\'s alert rules') || !requireHelm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'cairn-alerts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const groups = renderedGroups();
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups }));
  const check = spawnSync('promtool', ['check', 'rules', join(dir, 'rules.yaml')], { encoding: 'utf8', timeout: 60_000 });
  t.is(check.status, 0, check.stdout + check.stderr);
  // Unit tests compare annotations exactly; the templated summaries are left to `check rules`.
  const bare = groups.map((g) => ({ ...g, rules: g.rules.map((r) => ({ ...r, annotations: { runbook_url: r.annotations['runbook_url'] } })) }));
  writeFileSync(join(dir, 'bare.yaml'), stringify({ groups: bare }));
  writeFileSync(join(dir, 'tests.yaml'), stringify({ rule_files: ['bare.yaml'], evaluation_interval: '1m', tests: CASES }));
  const unit = spawnSync('promtool', ['test', 'rules', 'tests.yaml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  t.is(unit.status, 0, unit.stdout + unit.stderr);
  const tested = new Set(CASES.flatMap((c) => c.alert_rule_test.map((a) => a.alertname)));
  for (const g of groups) for (const r of g.rules) t.true(tested.has(r.alert), `no unit test for ${r.alert}`);
});
