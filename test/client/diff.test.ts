// Chunk-list diffs (pure): applying the diff to the old list always yields the new list, and a
// local edit of a list of distinct names becomes one small splice.
import test from 'ava';
import fc from 'fast-check';
import { applyDiff, diffLists } from '../../src/client/diff.js';

const id = (x: string): string => x;

test('applyDiff(old, diffLists(old, new)) is new, for any lists (repeats included)', (t) => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e'), { maxLength: 40 }), fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), { maxLength: 40 }), (oldList, newList) => {
      const splices = diffLists(oldList, newList, id);
      t.deepEqual(applyDiff(oldList, splices), newList);
      // Splices are ordered and disjoint.
      let next = 0;
      for (const sp of splices) {
        t.true(sp.start >= next);
        next = sp.start + sp.deleteCount;
      }
      t.true(next <= oldList.length);
    }),
    { numRuns: 500 },
  );
});

test('one local edit of distinct names is one splice carrying only the new names', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat({ max: 5 }), fc.nat({ max: 5 }), (n, at, del, ins) => {
      const oldList = Array.from({ length: n }, (_, i) => `c${i}`);
      const start = at % (n + 1);
      const deleteCount = Math.min(del, n - start);
      const inserted = Array.from({ length: ins }, (_, i) => `new${i}`);
      const newList = [...oldList.slice(0, start), ...inserted, ...oldList.slice(start + deleteCount)];
      const splices = diffLists(oldList, newList, id);
      t.deepEqual(applyDiff(oldList, splices), newList);
      t.true(splices.length <= 1);
      t.is(splices.reduce((k, sp) => k + sp.insert.length, 0), ins);
    }),
    { numRuns: 300 },
  );
});

test('an unchanged list needs no splice; an empty new list deletes everything', (t) => {
  t.deepEqual(diffLists(['a', 'b'], ['a', 'b'], id), []);
  t.deepEqual(diffLists(['a', 'b'], [], id), [{ start: 0, deleteCount: 2, insert: [] }]);
  t.deepEqual(diffLists([], ['x'], id), [{ start: 0, deleteCount: 0, insert: ['x'] }]);
  t.throws(() => applyDiff(['a'], [{ start: 1, deleteCount: 1, insert: [] }]), { instanceOf: RangeError });
});
