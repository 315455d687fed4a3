// Where block nodes and gateways get the cluster map from: a MapSource gives the current map,
// the previous one (to find data during a transition) and change notifications. Static maps
// come from a JSON file (dev, tests), polled for changes; the metadata Admin API is the other source.
import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { NODE_STATES, PARTITION_COUNT, assign, type ClusterMap, type MapNode } from '../placement/index.js';

export interface MapSource {
  current(): ClusterMap;
  previous(): ClusterMap | undefined;
  /** Called after every map change (new epoch); returns an unsubscribe function. */
  onChange(cb: (map: ClusterMap, previous: ClusterMap | undefined) => void): () => void;
  close(): void;
}

/** The map before any is known: epoch 0, no nodes, no owners. */
export function emptyMap(replicationFactor = 1): ClusterMap {
  return { epoch: 0, replicationFactor, nodes: [], partitions: Array.from({ length: PARTITION_COUNT }, () => []) };
}

/** A map whose every partition lives on one node (embedded, or a gateway with one block node). */
export function singleNodeMap(id: string, addr: string): ClusterMap {
  return { epoch: 1, replicationFactor: 1, nodes: [{ id, addr, zone: '', weight: 1, state: 'up' }], partitions: Array.from({ length: PARTITION_COUNT }, () => [id]) };
}

const nodeSchema = z.object({
  id: z.string().min(1),
  addr: z.string().min(1),
  zone: z.string().default(''),
  weight: z.number().positive().default(1),
  state: z.enum(NODE_STATES as [MapNode['state'], ...MapNode['state'][]]).default('up'),
});

const mapSchema = z.object({
  epoch: z.number().int().min(1),
  replicationFactor: z.number().int().min(1).max(16),
  nodes: z.array(nodeSchema).min(1),
  partitions: z.array(z.array(z.string())).length(PARTITION_COUNT).optional(),
});

const fileSchema = mapSchema.extend({ previous: mapSchema.optional() });

function resolveMap(raw: z.infer<typeof mapSchema>, previous: ClusterMap | null): ClusterMap {
  const nodes: MapNode[] = raw.nodes.map((n) => ({ ...n }));
  if (raw.partitions === undefined) {
    // No partitions given: compute them, deterministically, from the previous map if any.
    const computed = assign(previous, nodes, raw.replicationFactor);
    return { ...computed, epoch: raw.epoch };
  }
  const ids = new Set(nodes.map((n) => n.id));
  raw.partitions.forEach((row, p) => {
    if (row.length !== raw.replicationFactor) throw new TypeError(`partitions[${p}] must list ${raw.replicationFactor} node ids`);
    if (new Set(row).size !== row.length) throw new TypeError(`partitions[${p}] repeats a node`);
    for (const id of row) if (!ids.has(id)) throw new TypeError(`partitions[${p}] names unknown node "${id}"`);
  });
  return { epoch: raw.epoch, replicationFactor: raw.replicationFactor, nodes: [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)), partitions: raw.partitions.map((r) => [...r]) };
}

/**
 * Parses a map file: `{epoch, replicationFactor, nodes[{id, addr, zone?, weight?, state?}],
 * partitions?, previous?}`. Without `partitions` they are assigned from `previous` (or from
 * scratch), so every process reading the same file computes the same map.
 */
export function parseMapFile(text: string): { map: ClusterMap; previous: ClusterMap | undefined } {
  const parsed = fileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(`cluster map: ${(issue?.path ?? []).join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  const previous = parsed.data.previous ? resolveMap(parsed.data.previous, null) : undefined;
  const map = resolveMap(parsed.data, previous ?? null);
  if (previous && previous.epoch >= map.epoch) throw new TypeError(`cluster map: previous.epoch ${previous.epoch} must be below epoch ${map.epoch}`);
  return { map, previous };
}

/** A map held in memory; set() moves to a newer epoch (tests, single-node wiring). */
export class StaticMapSource implements MapSource {
  #map: ClusterMap;
  #previous: ClusterMap | undefined;
  readonly #listeners = new Set<(map: ClusterMap, previous: ClusterMap | undefined) => void>();

  constructor(map: ClusterMap, previous?: ClusterMap) {
    this.#map = map;
    this.#previous = previous;
  }

  current(): ClusterMap {
    return this.#map;
  }

  previous(): ClusterMap | undefined {
    return this.#previous;
  }

  onChange(cb: (map: ClusterMap, previous: ClusterMap | undefined) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /** Installs a newer map; an older or equal epoch is ignored. */
  set(map: ClusterMap, previous?: ClusterMap): boolean {
    if (map.epoch <= this.#map.epoch) return false;
    this.#previous = previous ?? (this.#map.epoch > 0 ? this.#map : undefined);
    this.#map = map;
    for (const cb of this.#listeners) cb(map, this.#previous);
    return true;
  }

  close(): void {
    this.#listeners.clear();
  }
}

export interface FileMapSourceOptions {
  readonly path: string;
  /** How often the file is checked for changes (default 1000 ms). */
  readonly pollMs?: number;
  readonly onError?: (err: unknown) => void;
}

/**
 * A map read from a JSON file and re-read when the file changes. A missing file is an empty
 * map (epoch 0), so processes can start before the map listing their ports is written.
 * Writers should replace the file atomically (write + rename).
 */
export class FileMapSource extends StaticMapSource {
  readonly #path: string;
  readonly #onError: (err: unknown) => void;
  readonly #timer: NodeJS.Timeout;
  /** inode, size and mtime of the file last read: a rename over it changes the inode. */
  #seen = '';

  constructor(options: FileMapSourceOptions) {
    super(emptyMap());
    this.#path = options.path;
    this.#onError = options.onError ?? (() => undefined);
    // A bad file at start-up is a configuration error: fail loudly. Later bad writes are reported and skipped.
    this.#load(true);
    // Plain polling rather than fs.watchFile, which was seen to miss a file created by rename.
    this.#timer = setInterval(() => this.#load(false), options.pollMs ?? 1000);
    this.#timer.unref();
  }

  #load(strict: boolean): void {
    let text: string;
    try {
      const st = statSync(this.#path);
      const seen = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (seen === this.#seen) return;
      this.#seen = seen;
      text = readFileSync(this.#path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      if (strict) throw err;
      this.#onError(err);
      return;
    }
    try {
      const { map, previous } = parseMapFile(text);
      this.set(map, previous);
    } catch (err) {
      if (strict) throw err;
      this.#onError(err);
    }
  }

  override close(): void {
    clearInterval(this.#timer);
    super.close();
  }
}
