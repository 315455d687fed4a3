// Lays a group-commit batch's records out over the active segment and, once it would pass
// segmentBytes, freshly numbered ones: pure arithmetic, no I/O, so positions are known before writing.
import type { Segment } from './segment.js';

export interface Group {
  segmentId: number;
  existing: Segment | undefined;
  start: number;
  bytes: number;
  buffers: Buffer[];
  records: number;
}

/** Lays records out across the active segment and, past segmentBytes, fresh ones. */
export class Planner {
  readonly groups: Group[] = [];
  total = 0;
  private current: Group;

  constructor(active: Segment, private nextId: number, private readonly segmentBytes: number) {
    this.current = { segmentId: active.id, existing: active, start: active.size, bytes: 0, buffers: [], records: 0 };
  }

  get nextSegmentId(): number {
    return this.nextId;
  }

  roll(): void {
    if (this.current.start + this.current.bytes === 0) return;
    if (this.current.buffers.length > 0) this.groups.push(this.current);
    this.current = { segmentId: this.nextId++, existing: undefined, start: 0, bytes: 0, buffers: [], records: 0 };
  }

  add(header: Buffer, payload: Buffer | undefined): { segment: number; offset: number } {
    const size = header.length + (payload?.length ?? 0);
    if (this.current.start + this.current.bytes + size > this.segmentBytes) this.roll();
    const g = this.current;
    const offset = g.start + g.bytes;
    g.buffers.push(header);
    if (payload && payload.length > 0) g.buffers.push(payload);
    g.bytes += size;
    g.records++;
    this.total += size;
    return { segment: g.segmentId, offset };
  }

  finish(): Group[] {
    if (this.current.buffers.length > 0) this.groups.push(this.current);
    return this.groups;
  }
}
