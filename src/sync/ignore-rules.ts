// What the sync client leaves alone: built-in patterns (editor swap and temporary files, the
// state folder, download temporaries) plus the root's `.cairnignore` in gitignore syntax.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import ignoreModule, { type Ignore } from 'ignore';

// A CommonJS package whose typings declare a default export: module.exports.default is the factory.
const ignore = ignoreModule.default;

export const IGNORE_FILE = '.cairnignore';

export const DEFAULT_IGNORES: readonly string[] = [
  '.cairn-sync/',
  '.cairn-tmp/',
  '*.cairn-*.part',
  '*.swp',
  '*.swo',
  '*.swx',
  '*~',
  '.#*',
  '#*#',
  '4913',
  '.~lock.*#',
  '~$*',
  '*.tmp',
  '*.crdownload',
  '*.partial',
  '.DS_Store',
  'Thumbs.db',
  'desktop.ini',
];

export class IgnoreRules {
  #matcher: Ignore;
  #source = '';
  readonly #extra: readonly string[];

  constructor(extra: readonly string[] = []) {
    this.#extra = extra;
    this.#matcher = this.#build('');
  }

  #build(text: string): Ignore {
    return ignore().add([...DEFAULT_IGNORES, ...this.#extra]).add(text);
  }

  /** Re-reads `<root>/.cairnignore`; returns true when the rules changed. */
  async reload(root: string): Promise<boolean> {
    let text: string;
    try {
      text = await readFile(join(root, IGNORE_FILE), 'utf8');
    } catch {
      text = '';
    }
    if (text === this.#source) return false;
    this.#source = text;
    this.#matcher = this.#build(text);
    return true;
  }

  /** `key` is relative and "/"-separated; folders are matched as folders. */
  ignores(key: string, folder: boolean): boolean {
    if (key === '') return false;
    return this.#matcher.ignores(folder ? key + '/' : key);
  }
}
