// routemesh console: DOM helpers and number formats. Strings become text nodes, never markup.

var COLORS = ["#2f6fde", "#e8833a", "#1f9d55", "#b546c9", "#d64545", "#12a4b6", "#8a6d3b", "#5b6b8c",
              "#c2185b", "#7cb342", "#00897b", "#f4511e", "#6d4c41", "#3949ab"];
var colors = {};

// --- DOM --------------------------------------------------------------------------------------
export function $(id) { return document.getElementById(id); }

export function el(tag, attrs) {
  var node = document.createElement(tag);
  var key;
  for (key in attrs || {}) {
    if (key === "text") { node.textContent = attrs[key]; } else if (key === "cls") { node.className = attrs[key]; }
    else { node.setAttribute(key, attrs[key]); }
  }
  for (var i = 2; i < arguments.length; i++) {
    var child = arguments[i];
    if (child === null || child === undefined) { continue; }
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }

export function svg(tag, attrs) {
  var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (var key in attrs || {}) { node.setAttribute(key, attrs[key]); }
  return node;
}

export function td(text, cls) { return el("td", { text: text, cls: cls || "", title: String(text) }); }

export function badge(word) { return el("span", { cls: "badge " + word.replace(/[^a-z_]/g, ""), text: word }); }

export function colorOf(name) {
  if (!(name in colors)) {
    colors[name] = COLORS[Object.keys(colors).length % COLORS.length];
  }
  return colors[name];
}

// --- formats ------------------------------------------------------------------------------------------------
export function ms(v) { return v > 0 ? (v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms") : "–"; }
export function usd(v) { return v >= 1 ? "$" + v.toFixed(2) : v > 0 ? "$" + v.toFixed(v >= 0.01 ? 4 : 6) : "$0"; }
export function pct(v) { return (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%"; }
export function num(v) { return Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 }); }
export function clock(t) { return t ? new Date(t).toLocaleTimeString([], { hour12: false }) : "–"; }
export function stamp(t) { return t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; }

export function paintSwatches(root) {
  var swatches = root.querySelectorAll(".swatch[data-color]");
  for (var i = 0; i < swatches.length; i++) {
    swatches[i].style.backgroundColor = colorOf(swatches[i].getAttribute("data-color"));
  }
}
