// Summaries the benchmarks print: medians of repeated runs with the runs themselves, percentiles,
// and a bootstrap interval for a median (seeded, so a re-run of the same figures prints the same).

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** mulberry32: a small seeded PRNG, enough for resampling. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 95 % percentile-bootstrap interval of the median of XS. */
export function bootstrapMedian(xs: number[], iterations = 5000, seed = 1): [number, number] {
  const random = prng(seed);
  const medians = Array.from({ length: iterations }, () =>
    median(Array.from({ length: xs.length }, () => xs[Math.floor(random() * xs.length)])),
  );
  return [percentile(medians, 2.5), percentile(medians, 97.5)];
}

export function fmt(xs: number[], unit: string, digits = 1): string {
  const runs = xs.map((x) => x.toFixed(digits)).join(", ");
  return `median ${median(xs).toFixed(digits)} ${unit} (runs: ${runs})`;
}
