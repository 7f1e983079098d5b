// A dependency-free SVG line chart of revenue per window, one line per currency.
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];
const PAD = { left: 64, right: 12, top: 12, bottom: 26 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// windows: [{currency, window_start, revenue}], newest `limit` window starts are drawn.
export function drawRevenue(svg, windows, limit = 24) {
  // Drawn in the element's own pixels, so text and dots keep their shape at any width.
  const width = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 900);
  const height = 260;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const starts = [...new Set(windows.map((w) => w.window_start))].sort().slice(-limit);
  if (starts.length === 0) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "waiting for orders…"));
    return;
  }
  const shown = windows.filter((w) => starts.includes(w.window_start));
  const top = Math.max(1, ...shown.map((w) => Number(w.revenue))) * 1.1;
  const x = (start) => PAD.left + (starts.length === 1 ? 0.5 : starts.indexOf(start) / (starts.length - 1)) *
    (width - PAD.left - PAD.right);
  const y = (value) => height - PAD.bottom - (Number(value) / top) * (height - PAD.top - PAD.bottom);
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(el("line", { class: "axis", x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value) }));
    svg.append(el("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, value.toFixed(0)));
  }
  const step = Math.max(1, Math.ceil(starts.length / 8));
  starts.forEach((start, index) => {
    if (index % step === 0) {
      svg.append(el("text", { x: x(start), y: height - 8, "text-anchor": "middle" }, start.slice(11, 19)));
    }
  });
  const currencies = [...new Set(shown.map((w) => w.currency))].sort();
  currencies.forEach((currency, index) => {
    const colour = COLOURS[index % COLOURS.length];
    const points = shown.filter((w) => w.currency === currency)
      .sort((a, b) => a.window_start.localeCompare(b.window_start));
    svg.append(el("polyline", {
      points: points.map((w) => `${x(w.window_start)},${y(w.revenue)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2, "data-currency": currency,
    }));
    for (const w of points) {
      const dot = el("circle", { cx: x(w.window_start), cy: y(w.revenue), r: 3, fill: colour });
      dot.append(el("title", {}, `${currency} ${w.window_start}: ${w.revenue}`));
      svg.append(dot);
    }
    svg.append(el("text", { x: PAD.left + 8 + index * 60, y: PAD.top + 10, fill: colour }, currency));
  });
}
