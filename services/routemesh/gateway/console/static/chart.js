// routemesh console: line charts drawn as inline SVG (no library).
import { clear, clock, colorOf, el, paintSwatches, svg } from "./dom.js";

// --- charts: inline SVG ---------------------------------------------------------------------------------------
export function niceStep(raw) {  // 1, 2, 2.5 or 5 times a power of ten, at least `raw`
  var power = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
  var fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 2.5 ? 2.5 : fraction <= 5 ? 5 : 10) * power;
}

export function lineChart(box, times, series, format) {
  var W = 400, H = 150, L = 46, R = 8, T = 8, B = 20;
  clear(box);
  var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  var max = 0;
  series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
  var step = niceStep(max > 0 ? max / 3 : 1 / 3);
  var steps = Math.max(1, Math.ceil(max / step - 1e-9));
  max = steps * step;
  var t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
  if (t1 === t0) { t0 = t1 - 1; }
  function x(t) { return L + (t - t0) / (t1 - t0) * (W - L - R); }
  function y(v) { return T + (1 - v / max) * (H - T - B); }
  for (var g = 0; g <= steps; g++) {
    var value = step * g;
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(value), y2: y(value), "class": "axis" }));
    var label = svg("text", { x: L - 4, y: y(value) + 3, "text-anchor": "end", "class": "tick" });
    label.textContent = format(value);
    root.appendChild(label);
  }
  if (times.length) {
    [[t0, "start"], [t1, "end"]].forEach(function (pair) {
      var tick = svg("text", { x: x(pair[0]), y: H - 5, "text-anchor": pair[1], "class": "tick" });
      tick.textContent = clock(pair[0]);
      root.appendChild(tick);
    });
  }
  series.forEach(function (s) {
    var points = [];
    function flush() {
      if (points.length > 1) {
        root.appendChild(svg("polyline", { points: points.join(" "), "class": "line", stroke: colorOf(s.name) }));
      } else if (points.length === 1) {
        var xy = points[0].split(",");
        root.appendChild(svg("circle", { cx: xy[0], cy: xy[1], r: 2, fill: colorOf(s.name) }));
      }
      points = [];
    }
    s.values.forEach(function (v, i) {
      if (v === null) { flush(); } else { points.push(x(times[i]).toFixed(1) + "," + y(v).toFixed(1)); }
    });
    flush();
  });
  box.appendChild(root);
  var legend = el("div", { cls: "legend" });
  if (!times.length || !series.length) { legend.appendChild(el("span", { cls: "empty", text: "no data yet" })); }
  series.forEach(function (s) {
    legend.appendChild(el("span", {}, el("span", { cls: "swatch", "data-color": s.name }), s.name));
  });
  box.appendChild(legend);
  paintSwatches(legend);
}
