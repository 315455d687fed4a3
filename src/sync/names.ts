// Names the sync client makes up: conflicted copies ("report (conflicted copy laptop
// 2026-11-22 013000).txt") and the keys it uses for paths (relative, "/"-separated, NFC).

/** `name (conflicted copy <device> <YYYY-MM-DD HHMMSS>).ext`, in the folder of `key`; `n` > 1 adds " n". */
export function conflictedCopyName(key: string, device: string, at: Date, n = 1): string {
  const slash = key.lastIndexOf('/');
  const dir = slash < 0 ? '' : key.slice(0, slash + 1);
  const name = key.slice(slash + 1);
  const dot = name.lastIndexOf('.');
  // A leading dot is a hidden file's name, not an extension.
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const p = (v: number, w = 2): string => String(v).padStart(w, '0');
  const stamp = `${at.getFullYear()}-${p(at.getMonth() + 1)}-${p(at.getDate())} ${p(at.getHours())}${p(at.getMinutes())}${p(at.getSeconds())}`;
  return `${dir}${stem} (conflicted copy ${device} ${stamp}${n > 1 ? ` ${n}` : ''})${ext}`;
}

/** The sync key of a remote path under `root` ("" for the root itself), or null when outside it. */
export function keyOf(root: string, remotePath: string): string | null {
  if (root === '/') return remotePath === '/' ? '' : remotePath.startsWith('/') ? remotePath.slice(1) : null;
  if (remotePath === root) return '';
  return remotePath.startsWith(root + '/') ? remotePath.slice(root.length + 1) : null;
}

export function remoteOf(root: string, key: string): string {
  if (key === '') return root;
  return root === '/' ? '/' + key : `${root}/${key}`;
}

export function parentOf(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

/** True when `key` is `ancestor` or lies under it. */
export function isWithin(key: string, ancestor: string): boolean {
  return ancestor === '' || key === ancestor || key.startsWith(ancestor + '/');
}
