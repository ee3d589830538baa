// A small latency chart (oldest left, newest right) drawn as SVG elements, no library.
import { svg } from "./dom.js";

export function latencyChart(results) {
  const width = 600, height = 160, pad = 28;
  const points = [...results].reverse();  // the API lists newest first
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Latency of the last ${points.length} tests` });
  if (points.length === 0) {
    chart.append(svg("text", { x: pad, y: height / 2, text: "No tests yet." }));
    return chart;
  }
  const max = Math.max(...points.map((p) => p.latency_ms), 1);
  const x = (i) => pad + (points.length === 1 ? (width - 2 * pad) / 2 : (i * (width - 2 * pad)) / (points.length - 1));
  const y = (v) => height - pad - (v / max) * (height - 2 * pad);
  chart.append(svg("text", { x: 2, y: pad - 8, text: `${Math.round(max)} ms` }));
  chart.append(svg("text", { x: 2, y: height - pad + 14, text: "0" }));
  chart.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#d9dde5" }));
  chart.append(svg("polyline", { class: "line", points: points.map((p, i) => `${x(i)},${y(p.latency_ms)}`).join(" ") }));
  points.forEach((p, i) => {
    chart.append(svg("circle", { cx: x(i), cy: y(p.latency_ms), r: 3.5, class: `dot-${p.status}` },
      svg("title", { text: `${p.status}, ${Math.round(p.latency_ms)} ms, ${p.checked_at}` })));
  });
  return chart;
}
