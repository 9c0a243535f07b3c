import { CURSOR_PATTERN, DEFAULT_PAGE_LIMIT, ErrorCode, MAX_PAGE_LIMIT, ValidationError } from '../protocol/index.js';
import { single, type Query } from './query-params.js';

/** The position after the last item of a page, in the list's sort order: the sort key of that item. */
export type Key = (string | number)[];
/** What a sort's key holds, part by part. */
export type KeyShape = readonly ('string' | 'integer')[];

export interface PageRequest<S extends string> {
  sort: S;
  limit: number;
  /** the key after which this page starts; null: the first page */
  after: Key | null;
}

const CURSOR = new RegExp(CURSOR_PATTERN);
const refuse = (field: string, message: string) => new ValidationError(ErrorCode.badRequest, message, field);

/** `limit`, `sort` and `cursor` of a list; `sorts` maps each sort's name to the shape of its key. */
export function pageRequest<S extends string>(q: Query, sorts: Record<S, KeyShape>, defaultSort: S): PageRequest<S> {
  const names = Object.keys(sorts) as S[];
  const sortParam = single(q, 'sort') ?? defaultSort;
  if (!names.includes(sortParam as S)) throw refuse('sort', `sort must be one of ${names.join(', ')}`);
  const sort = sortParam as S;
  const limitParam = single(q, 'limit');
  const limit = limitParam === undefined ? DEFAULT_PAGE_LIMIT : /^\d{1,7}$/.test(limitParam) ? Number(limitParam) : NaN;
  if (!(limit >= 1 && limit <= MAX_PAGE_LIMIT))
    throw refuse('limit', `limit must be an integer from 1 to ${MAX_PAGE_LIMIT}`);
  const cursor = single(q, 'cursor');
  return { sort, limit, after: cursor === undefined ? null : decodeCursor(cursor, sort, sorts[sort]) };
}

/** The cursor of the page after `last`: the sort's name and its key, so a cursor cannot be used with another sort. */
export function encodeCursor(sort: string, key: Key): string {
  return Buffer.from(JSON.stringify([sort, ...key]), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string, sort: string, shape: KeyShape): Key {
  const bad = () => refuse('cursor', 'cursor is not one this list gave out; start again without it');
  if (!CURSOR.test(cursor)) throw bad();
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parts) || typeof parts[0] !== 'string') throw bad();
  if (parts[0] !== sort)
    throw refuse('cursor', `cursor belongs to sort=${parts[0].slice(0, 20)}; send the same sort with it`);
  if (parts.length !== shape.length + 1) throw bad();
  const key = parts.slice(1);
  const fits = key.every((v, i) =>
    shape[i] === 'integer' ? Number.isSafeInteger(v) : typeof v === 'string' && v.length <= 64,
  );
  if (!fits) throw bad();
  return key as Key;
}

/** One page from rows read with `limit + 1`: the extra row only says that a next page exists. */
export function pageOf<R, T>(
  rows: R[],
  limit: number,
  sort: string,
  keyOf: (row: R) => Key,
  item: (row: R) => T,
): { items: T[]; nextCursor: string | null } {
  const last = rows.length > limit ? rows[limit - 1] : undefined;
  return {
    items: rows.slice(0, limit).map(item),
    nextCursor: last === undefined ? null : encodeCursor(sort, keyOf(last)),
  };
}
