import { describe, expect, it } from 'vitest';
import { ActionStatus } from './status.svelte';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('ActionStatus', () => {
  it('keeps a newer action’s notice when an older one ends after it (a first load after an import)', async () => {
    const status = new ActionStatus();
    const load = deferred();
    const loading = status.run(() => load.promise);
    await status.run(async () => {}, 'Imported 1 conversations');
    expect(status.message).toBe('Imported 1 conversations');
    load.resolve();
    await loading;
    expect(status.message).toBe('Imported 1 conversations');
  });

  it('still shows an older action’s error', async () => {
    const status = new ActionStatus();
    const load = deferred();
    const loading = status.run(() => load.promise);
    await status.run(async () => {}, 'Saved');
    load.reject(new Error('the server is down'));
    await loading;
    expect(status.error).toBe('the server is down');
  });
});
