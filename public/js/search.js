// The search box: `tag:launch type:webhook brandId:b1 after:2026-12-01` style terms, as the
// query `list` takes (docs/spec.md §19), and back. Kept in the page's URL as `?q=`, so a search
// can be shared. Pure functions: app.js wires them, the browser tests and Node import them.

/** Terms that are not payload fields: the search's own names and the `list` parameter each sets. */
const NAMED = { tag: 'tag', type: 'type', after: 'createdAfter', before: 'createdBefore' };
const MAX_FIELDS = 3;

/** A date alone (`2026-12-01`) is that day's start in UTC; anything else is sent as written. */
const time = (value) => (/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value);

/** The terms of `text`: `name:value` or `name:"a value with spaces"`. */
function terms(text) {
  const found = [];
  const pattern = /\s*([^\s:"]+):(?:"([^"]*)"|(\S+))|\s*(\S+)/gy;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match[4] !== undefined) found.push({ stray: match[4] });
    else found.push({ name: match[1], value: match[2] ?? match[3] });
    if (pattern.lastIndex >= text.length) break;
  }
  return found;
}

/**
 * `{params, problem}`: the `list` parameters `text` asks for (`tag`, `type`, `createdAfter`,
 * `createdBefore`, `payload.<field>`), or why it cannot be read (the API checks the rest).
 */
export function parseSearch(text) {
  const params = {};
  let fields = 0;
  for (const term of terms(text.trim())) {
    if (term.stray !== undefined) {
      return { params: {}, problem: `"${term.stray}" is not a search term: write name:value, as tag:launch or brandId:b1.` };
    }
    const named = Object.hasOwn(NAMED, term.name) ? NAMED[term.name] : undefined;
    const key = named ?? `payload.${term.name}`;
    if (key in params) return { params: {}, problem: `${term.name} is given twice.` };
    if (!named && ++fields > MAX_FIELDS) return { params: {}, problem: `At most ${MAX_FIELDS} payload fields per search.` };
    params[key] = named === 'createdAfter' || named === 'createdBefore' ? time(term.value) : term.value;
  }
  return { params, problem: null };
}

/** Whether a task (a `list` summary) matches `params`: true, false, or null when it cannot tell (payload fields). */
export function matchesSearch(task, params) {
  if (params.tag && !(task.tags ?? []).includes(params.tag)) return false;
  if (params.type && task.type !== params.type) return false;
  const created = Date.parse(task.createdAt);
  if (params.createdAfter && created < Date.parse(params.createdAfter)) return false;
  if (params.createdBefore && created >= Date.parse(params.createdBefore)) return false;
  return Object.keys(params).some((key) => key.startsWith('payload.')) ? null : true;
}
