// Kills the simulated cluster's processes when the test worker goes away without teardown (AVA
// ends a timed-out worker with SIGTERM, which skips teardown): otherwise block nodes, metadata
// and gateways would outlive the test on a shared machine. Test support only.
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
let installed = false;

function killAll(): void {
  for (const p of live) {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

/** Registers a child process to be killed if this process exits or gets SIGTERM first. */
export function reap<T extends ChildProcess>(proc: T): T {
  if (!installed) {
    installed = true;
    process.once('exit', killAll);
    process.once('SIGTERM', () => {
      killAll();
      process.exit(143);
    });
  }
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  return proc;
}
