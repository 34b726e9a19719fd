// Summaries the benchmarks print: medians of repeated runs, with the runs themselves.

export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

export function fmt(xs: number[], unit: string, digits = 1): string {
  const runs = xs.map((x) => x.toFixed(digits)).join(", ");
  return `median ${median(xs).toFixed(digits)} ${unit} (runs: ${runs})`;
}
