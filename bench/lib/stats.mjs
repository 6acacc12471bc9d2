// Summaries of repeated measurements: the suite reports the median of its runs with the
// min and max, and latencies as percentiles of per-call timings.

/** The median, min and max of `values` (numbers; NaN-free). */
export function summarize(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const n = sorted.length
  if (n === 0) return { median: null, min: null, max: null, runs: 0 }
  const median = n % 2 === 1 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
  return { median, min: sorted[0], max: sorted[n - 1], runs: n }
}

/** The `p`-th percentile (0 to 100, nearest rank) of a sorted typed array or array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}
