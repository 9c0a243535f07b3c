import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitAtMost } from '../../runtime/wait.js';

describe('waitAtMost', () => {
  it('is true when the promise settles in time, rejected or not, and false when it does not', async () => {
    assert.equal(await waitAtMost(Promise.resolve(1), 1_000), true);
    assert.equal(await waitAtMost(Promise.reject(new Error('refused')), 1_000), true);
    assert.equal(await waitAtMost(new Promise(() => {}), 20), false);
  });
});
