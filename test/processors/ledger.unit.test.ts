import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  applyToBook,
  compareKeys,
  decide,
  emptyBook,
  emptyStock,
  evolve,
  onHandOf,
  type BookEvent,
  type SkuStock,
} from '../../processors/ledger/ledger.js';
import { pinFastCheck } from '../helpers/seed.js';
import { arbitraryEvents, ev, numbers, shuffledWithDuplicates } from './arbitraries.js';

pinFastCheck('processors/ledger');

const given = (...events: BookEvent[]): SkuStock => events.reduce(evolve, emptyStock);

describe('ledger decide/evolve (CONTRACT section 4)', () => {
  it('given nothing, when received 5, then onHand is 5', () => {
    assert.equal(given(ev('received', 5, 1000, 'a')).onHand, 5);
  });

  it('given onHand 5, when shipped 8, then onHand is -3 (events are facts)', () => {
    const s = given(ev('received', 5, 1000, 'a'), ev('shipped', 8, 2000, 'b'));
    assert.equal(s.onHand, -3);
  });

  it('given a count of 10 at t=2000, when a delta ordered before it arrives, then nothing changes', () => {
    const state = given(ev('counted', 10, 2000, 'c'));
    assert.deepEqual(decide(state, ev('received', 4, 1000, 'late')), { kind: 'none' });
    assert.equal(evolve(state, ev('received', 4, 1000, 'late')).onHand, 10);
  });

  it('given deltas after t=2000, when a late count at t=2000 arrives, then onHand = count + deltas after it', () => {
    const state = given(
      ev('received', 3, 1000, 'early'),
      ev('received', 7, 3000, 'after'),
      ev('adjusted', -2, 4000, 'adj'),
    );
    assert.deepEqual(decide(state, ev('counted', 100, 2000, 'count')), { kind: 'anchor', onHand: 105 });
  });

  it('given a count at t=3000, when an older count arrives, then it is stored and changes nothing', () => {
    const state = given(ev('counted', 50, 3000, 'new'), ev('received', 1, 4000, 'x'));
    assert.deepEqual(decide(state, ev('counted', 7, 1000, 'old')), { kind: 'none' });
  });

  it('equal timestamps are ordered by id, then device', () => {
    const a = ev('counted', 10, 1000, 'a');
    const b = ev('received', 1, 1000, 'b');
    assert.equal(given(a, b).onHand, 11);
    assert.equal(given(b, a).onHand, 11); // b (id "b") is after the count (id "a")
    const sameId = { ...ev('received', 2, 1000, 'a'), device: 'zz' } as BookEvent;
    assert.equal(given(a, sameId).onHand, 12); // same ts and id, device "zz" > "d1"
  });

  it('a repeated key is a duplicate and changes nothing', () => {
    const e = ev('received', 5, 1000, 'a');
    const once = applyToBook(emptyBook, e);
    const twice = applyToBook(once.book, e);
    assert.equal(twice.outcome, 'duplicate');
    assert.equal(onHandOf(twice.book, 'W1', 'S1'), 5);
  });

  it('property: any permutation with random duplicates gives the stock of in-order application', () => {
    fc.assert(
      fc.property(arbitraryEvents(), fc.infiniteStream(fc.nat()), (events, noise) => {
        const inOrder = [...events].sort((x, y) => compareKeys(x, y));
        const expected = inOrder.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        const next = numbers(noise);
        const delivered = shuffledWithDuplicates(events, next);
        const actual = delivered.reduce((b, e) => applyToBook(b, e).book, emptyBook);
        for (const [key, s] of expected.stock) assert.equal(actual.stock.get(key)?.onHand, s.onHand, key);
        assert.equal(actual.stock.size, expected.stock.size);
      }),
      { numRuns: 300 },
    );
  });
});
