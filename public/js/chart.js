// "Failures over time": the API's `failures` (docs/spec.md §22) drawn with uPlot (vendored in
// public/vendor/uplot, loaded as a classic script: the global `uPlot`), failures per hour
// stacked by cause with retries and recoveries as lines, and the same numbers as a table that
// screen readers read (the canvas is hidden from them).

// Distinct hues, each with 3:1 contrast or more against the white panel.
const CAUSE_COLOURS = ['#b42318', '#9a6700', '#6941c6', '#0e7490', '#c11574'];
const OTHER_COLOUR = '#5b6577';
const RETRY_COLOUR = '#2456d6';
const RECOVERY_COLOUR = '#067647';

const hourLabel = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/** The stacked series: cause by cause, then other; each bar reaches the sum up to it. */
export function stacked(data) {
  const layers = data.groups.map((g, i) => ({ label: g.template, colour: CAUSE_COLOURS[i % CAUSE_COLOURS.length], values: data.hours.map((h) => h.failures[i] ?? 0) }));
  layers.push({ label: 'Other causes', colour: OTHER_COLOUR, values: data.hours.map((h) => h.other) });
  let running = data.hours.map(() => 0);
  return layers.map((layer) => {
    running = running.map((sum, i) => sum + layer.values[i]);
    return { ...layer, top: running.slice() };
  });
}

/** The table behind the chart: one row per hour, a column per cause, retries, recoveries. */
export function chartTable(data) {
  const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const head = ['Hour', ...data.groups.map((g) => g.template), 'Other causes', 'Retries', 'Recoveries']
    .map((h) => `<th scope="col">${escape(h)}</th>`).join('');
  const rows = data.hours.map((h) => `<tr><th scope="row">${escape(hourLabel(h.start))}</th>${
    [...h.failures, h.other, h.retries, h.recoveries].map((n) => `<td>${n}</td>`).join('')}</tr>`).join('');
  return `<thead><tr>${head}</tr></thead><tbody>${rows}</tbody>`;
}

/** Draws `data` into `target` (replacing what was there), or says there is nothing to draw. */
export function drawChart(target, data, width) {
  target.replaceChildren();
  const total = data.hours.reduce((n, h) => n + h.other + h.failures.reduce((a, b) => a + b, 0) + h.retries + h.recoveries, 0);
  if (total === 0 || typeof uPlot === 'undefined') return false;
  const x = data.hours.map((h) => Date.parse(h.start) / 1000 + 1800);
  const layers = stacked(data);
  // Tallest first: each later (lower) layer is drawn over the one before it.
  const drawn = layers.slice().reverse();
  const bars = uPlot.paths.bars({ size: [0.8, 40] });
  const options = {
    width,
    height: 220,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: () => [x[0] - 1800, x[x.length - 1] + 1800] }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{}, { label: 'Per hour', size: 50 }],
    series: [
      {},
      ...drawn.map((layer) => ({ label: layer.label, fill: layer.colour, stroke: layer.colour, width: 0, paths: bars, points: { show: false } })),
      { label: 'Retries', stroke: RETRY_COLOUR, width: 2, points: { show: true, size: 5 } },
      { label: 'Recoveries', stroke: RECOVERY_COLOUR, width: 2, dash: [6, 4], points: { show: true, size: 5 } },
    ],
  };
  const series = [x, ...drawn.map((layer) => layer.top), data.hours.map((h) => h.retries), data.hours.map((h) => h.recoveries)];
  // eslint-disable-next-line no-new
  new uPlot(options, series, target);
  return true;
}
