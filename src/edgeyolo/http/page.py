"""The status page: one self-contained HTML document (inline CSS and script, no assets).

It works offline on an edge box: nothing is fetched but ``/api/status`` (every 2 s) and each
camera's MJPEG stream (past four cameras, ``latest.jpg`` once a second instead: browsers
keep at most six connections per server). A ``?token=`` in the page's address is passed on
to these requests, so the page can be opened as ``http://box:9108/?token=...`` when the
server requires a token. Names from the config are inserted as text (``textContent``),
never as HTML.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeyolo</title>
<style>
:root { color-scheme: dark; --bg: #14161a; --card: #1e2127; --fg: #e6e6e6; --dim: #9aa0a6;
  --ok: #5ad17a; --bad: #ff6b6b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .8em 1.2em;
  border-bottom: 1px solid #2b2f36; }
h1 { font-size: 1.3em; margin: 0; }
h2 { font-size: 1.05em; margin: 0 0 .5em; }
main { padding: 1em 1.2em; display: grid; gap: 1.2em; }
.cameras { display: grid; gap: 1.2em;
  grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); }
.card { background: var(--card); border-radius: 6px; padding: .8em; }
.card img { width: 100%; display: block; background: #000; border-radius: 4px;
  aspect-ratio: 16 / 9; object-fit: contain; }
.facts { display: flex; flex-wrap: wrap; gap: .3em 1.2em; margin: .5em 0 0; color: var(--dim); }
.facts b { color: var(--fg); font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: var(--card); border-radius: 6px; }
th, td { text-align: left; padding: .45em .8em; border-bottom: 1px solid #2b2f36; }
th { color: var(--dim); font-weight: 500; }
.ok { color: var(--ok); } .bad { color: var(--bad); }
#error { color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>edgeyolo</h1>
  <span>status: <b id="status">…</b></span>
  <span>MQTT: <b id="mqtt">…</b></span>
  <span id="version"></span>
  <span id="error"></span>
</header>
<main>
  <section class="cameras" id="cameras"></section>
  <section>
    <h2>Models</h2>
    <table>
      <thead><tr><th>model</th><th>task</th><th>cameras</th><th>inference p50 / p99</th>
        <th>failures</th><th>health</th></tr></thead>
      <tbody id="models"></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + "?token=" + encodeURIComponent(token) : url;
const cards = new Map();

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function ms(p) { return p ? p.p50.toFixed(1) + " / " + p.p99.toFixed(1) + " ms" : "-"; }
function health(h) {
  if (!h) return el("span", "", "-");
  return el("span", h.ok ? "ok" : "bad", h.ok ? "ok" : (h.reason || "unhealthy"));
}
function fact(label, value) {
  const s = el("span", "", label + " ");
  if (value instanceof Node) s.append(value); else s.append(el("b", "", value));
  return s;
}

// A browser keeps at most 6 connections per server: past 4 cameras, each live view polls
// latest.jpg once a second instead of holding an MJPEG stream open.
const MAX_STREAMS = 4;

function poll(img, url) {
  const next = () => { img.src = withToken(url) + (token ? "&" : "?") + "t=" + Date.now(); };
  img.addEventListener("load", () => setTimeout(next, 1000));
  img.addEventListener("error", () => setTimeout(next, 2000));
  next();
}

function cameraCard(cam, count) {
  let card = cards.get(cam.name);
  if (!card) {
    card = el("article", "card");
    card.dataset.camera = cam.name;
    card.append(el("h2", "", cam.name));
    if (cam.stream) {
      const img = el("img", "live");
      img.alt = "live view of " + cam.name;
      if (count <= MAX_STREAMS) img.src = withToken(cam.stream); else poll(img, cam.latest);
      card.append(img);
    }
    card.append(el("div", "facts"));
    document.getElementById("cameras").append(card);
    cards.set(cam.name, card);
  }
  const facts = card.querySelector(".facts");
  facts.replaceChildren(
    fact("fps", cam.fps == null ? "-" : cam.fps.toFixed(1)),
    fact("latency p50 / p99", ms(cam.latency_ms)),
    fact("dropped", String(cam.dropped)),
    fact("size", cam.width ? cam.width + "x" + cam.height : "-"),
    fact("models", cam.models.map((m) => m.name).join(", ")),
    fact("health", health(cam.health)),
  );
}

function render(st) {
  const status = document.getElementById("status");
  status.textContent = st.status;
  status.className = st.status === "ok" ? "ok" : "bad";
  const mqtt = document.getElementById("mqtt");
  if (!st.mqtt) { mqtt.textContent = "off"; mqtt.className = ""; }
  else {
    mqtt.textContent = st.mqtt.connected ? "connected" : (st.mqtt.ok ? "buffering" : "down");
    mqtt.className = st.mqtt.ok ? "ok" : "bad";
  }
  document.getElementById("version").textContent = "v" + st.version;
  st.cameras.forEach((cam) => cameraCard(cam, st.cameras.length));
  const rows = st.models.map((m) => {
    const tr = el("tr");
    tr.dataset.model = m.name;
    const cam = st.cameras.find((c) => c.name === m.cameras[0]);
    const cm = cam && cam.models.find((x) => x.name === m.name);
    tr.append(el("td", "", m.name), el("td", "", m.task || "-"),
      el("td", "", m.cameras.join(", ")), el("td", "", ms(cm && cm.infer_ms)),
      el("td", "", String(m.failures)));
    const td = el("td"); td.append(health(m.health)); tr.append(td);
    return tr;
  });
  document.getElementById("models").replaceChildren(...rows);
}

async function refresh() {
  try {
    const r = await fetch(withToken("/api/status"), { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "status unavailable: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""

# Served with the 401 for "/" when a token is required: a browser (Home Assistant's "visit"
# link) can enter it; the form reloads the page with ?token=.
LOGIN = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>edgeyolo: token required</title>
<style>body { font: 15px system-ui, sans-serif; background: #14161a; color: #e6e6e6;
  display: grid; place-items: center; height: 90vh; }
input, button { font: inherit; padding: .4em .6em; }</style></head>
<body><form method="get" action="/">
<p>This edgeyolo needs its access token (<code>http.token</code>).</p>
<input type="password" name="token" autocomplete="current-password" autofocus>
<button type="submit">Open</button>
</form></body>
</html>
"""
