// What this browser remembers between visits (localStorage): the collection used last and
// whether result cards show the raw scores. Nothing secret: the API key stays in sessionStorage.

const LAST = "blipsearch.collection";
const RAW = "blipsearch.rawScores";

function read(key) { try { return localStorage.getItem(key); } catch { return null; } }
function write(key, value) {
  try { if (value === null) localStorage.removeItem(key); else localStorage.setItem(key, value); } catch { /* private mode */ }
}

export const lastCollection = () => read(LAST) || "";
export const rememberCollection = (name) => { if (name) write(LAST, name); };
export const rawScores = () => read(RAW) === "1";
export const setRawScores = (on) => write(RAW, on ? "1" : null);

// The collection to open when the URL names none: the one used last if it still exists, else the
// one changed most recently (the one just indexed), never simply the first by name.
export function pickCollection(list) {
  const last = lastCollection();
  if (last && list.some((c) => c.name === last)) return last;
  const when = (c) => Date.parse(c.updated_at || c.created_at || "") || 0;
  return list.reduce((best, c) => (best === null || when(c) > when(best) ? c : best), null)?.name || "";
}
