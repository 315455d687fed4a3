// Path rules for files in Cairn: absolute, "/"-separated, normalised, no "." or ".." segments,
// no NUL or control characters, bounded length. Violations are CAIRN_INVALID_PATH.
import { CairnError } from './errors.js';

export const MAX_PATH_BYTES = 4096;
export const MAX_SEGMENT_BYTES = 255;

/**
 * Returns the canonical form of `input` ("/a/b"), or throws CAIRN_INVALID_PATH.
 * Repeated and trailing slashes are collapsed; Unicode is NFC-normalised so that the same
 * name typed on macOS and Linux is the same path.
 */
export function normalizePath(input: unknown): string {
  if (typeof input !== 'string') throw invalid('path must be a string', String(input));
  if (input.length === 0) throw invalid('path is empty', input);
  if (!input.startsWith('/')) throw invalid('path must be absolute (start with "/")', input);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(input)) throw invalid('path contains NUL or a control character', input);
  const nfc = input.normalize('NFC');
  const segments = nfc.split('/').filter((s) => s.length > 0);
  if (segments.length === 0) throw invalid('path names the root, not a file', input);
  for (const seg of segments) {
    if (seg === '.' || seg === '..') throw invalid('path must not contain "." or ".." segments', input);
    if (Buffer.byteLength(seg) > MAX_SEGMENT_BYTES) throw invalid(`a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`, input);
  }
  const out = '/' + segments.join('/');
  if (Buffer.byteLength(out) > MAX_PATH_BYTES) throw invalid(`path is longer than ${MAX_PATH_BYTES} bytes`, input);
  return out;
}

function invalid(reason: string, path: string): CairnError {
  const shown = JSON.stringify(path.length > 80 ? path.slice(0, 80) + '…' : path);
  return new CairnError('CAIRN_INVALID_PATH', `invalid path ${shown}: ${reason}`, { fieldViolations: [{ field: 'path', description: reason }] });
}
