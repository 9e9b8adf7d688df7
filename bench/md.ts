// Markdown building blocks shared by the scenario sections and the report.

/** A number with `digits` decimals and thousands separators; "–" for NaN/Infinity. */
export const f = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "–");
export const int = (n: number): string => f(n, 0);
export const mib = (kib: number): string => (Number.isFinite(kib) ? (Math.abs(kib) >= 1024 ? `${f(kib / 1024)} MiB` : `${int(kib)} KiB`) : "–");
/** "1.23×" or "–". */
export const times = (r: number): string => (!Number.isFinite(r) ? "–" : r > 0 && r < 0.01 ? "< 0.01×" : `${f(r, 2)}×`);

// Columns whose cells are all numbers (or "–") are right-aligned.
const numeric = (cell: string) => /^[\d,.–×%-]+$/.test(cell);

export const table = (head: readonly string[], rows: readonly (readonly string[])[]): string =>
  [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, c) => (rows.length && rows.every((r) => numeric(r[c] ?? "")) ? " ---: " : " --- ")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");

export const fence = (text: string, lang = ""): string => `\`\`\`${lang}\n${text.trimEnd()}\n\`\`\``;
