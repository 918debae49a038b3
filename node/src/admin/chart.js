// The live pages' line charts: lines [{points: [[round, value]], color}] drawn on an SVG of
// 480×200 from 0 to yMax, with rounds along x, an optional dashed line at `dashed` (a budget),
// and `format` for the y labels. Shared by the node's page and the testnet's dashboard.
const SVG_NS = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function chart(svg, lines, yMax, format, dashed) {
  svg.replaceChildren();
  const L = 44, R = 470, T = 10, B = 166;
  const rounds = lines.flatMap((l) => l.points.map((p) => p[0]));
  const xMax = Math.max(1, ...rounds);
  const x = (v) => L + (R - L) * (xMax === 1 ? 0.5 : (v - 1) / (xMax - 1));
  const y = (v) => B - (B - T) * Math.min(1, v / yMax);
  svg.append(svgEl("line", { class: "axis", x1: L, y1: B, x2: R, y2: B }));
  svg.append(svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: B }));
  for (const f of [0, 0.5, 1]) {
    svg.append(svgEl("text", { x: L - 4, y: y(yMax * f) + 4, "text-anchor": "end" }, format(yMax * f)));
  }
  for (const r of [...new Set(rounds)]) {
    svg.append(svgEl("text", { x: x(r), y: B + 13, "text-anchor": "middle" }, r));
  }
  svg.append(svgEl("text", { x: (L + R) / 2, y: 196, "text-anchor": "middle" }, "round"));
  if (dashed !== undefined) {
    svg.append(svgEl("line", { class: "budget", x1: L, y1: y(dashed), x2: R, y2: y(dashed) }));
  }
  if (rounds.length === 0) {
    svg.append(svgEl("text", { x: (L + R) / 2, y: (T + B) / 2, "text-anchor": "middle" }, "no rounds yet"));
    return;
  }
  for (const line of lines) {
    if (line.points.length === 0) continue;
    const points = line.points.map(([r, v]) => x(r) + "," + y(v)).join(" ");
    svg.append(svgEl("polyline", { class: "series", stroke: line.color, points }));
    for (const [r, v] of line.points) {
      const dot = svgEl("circle", { cx: x(r), cy: y(v), r: 3, fill: line.color });
      dot.append(svgEl("title", {}, "round " + r + ": " + format(v)));
      svg.append(dot);
    }
  }
}
