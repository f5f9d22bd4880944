// Small helpers every part of the page uses: element lookup and how numbers, sizes, durations
// and paths are written.

export const $ = (selector, root = document) => root.querySelector(selector);

export function formatNumber(n) {
  return Number(n ?? 0).toLocaleString();
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function basename(path) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.at(-1) ?? String(path);
}

export function dirname(path) {
  const p = String(path);
  const i = Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\"));
  return i > 0 ? p.slice(0, i) : "";
}

/** The path without trailing separators ("/" stays "/"). */
export function normalisePath(p) {
  return p.length > 1 ? p.replace(/[\\/]+$/, "") : p;
}
