import { isErrno } from './errors.js';

/** Whether process `pid` exists (EPERM: it does, as another user's). For locks and resources named after a pid. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}
