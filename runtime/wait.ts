/**
 * Waits for `p` to settle, but `ms` at most (a publish over a dead link, a pool whose query never returns):
 * true when it settled in time. Its outcome is not passed on, and a rejection is not an error here.
 * The timer is cleared once `p` settles; until then it keeps the process alive, as the wait itself does.
 */
export async function waitAtMost(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = p.then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}
