// The shape every benchmark returns; bench/index.ts prints it as a table or one JSON line.

export interface BenchReport {
  /** Benchmark name, e.g. "blocknode". */
  readonly bench: string;
  /** The headline figure divided by (or compared with) the anchor measured in the same run. */
  readonly ratio: number;
  /** The target for `ratio`, and whether higher or lower is better. */
  readonly target: number;
  readonly better: 'higher' | 'lower';
  /** Every other figure (numbers or short strings), including the anchor's, with units in the key names. */
  readonly figures: Readonly<Record<string, number | string>>;
  /** Optional rows for the human table (e.g. a histogram). */
  readonly rows?: ReadonlyArray<Readonly<Record<string, number | string>>>;
}

/** A benchmark module's entry point; `args` are the CLI arguments after the bench name. */
export type BenchMain = (args: readonly string[]) => Promise<BenchReport>;
