"""The report's interactive embedding map: a <canvas>, its data as inline JSON and a small inline script.

Kept apart from report.py because it is a page component of its own (HTML, CSS and JavaScript) that the
figures do not need. The page must stay self-contained — no network request, no CDN, no external script —
so everything it draws is inlined, and at MAP_POINTS (20,000) points it must stay well under 10 MB:
coordinates are integers 0…10000, the data is columnar (one array per field, not one object per point), and
the instructions shown on hover are cut to a per-point length that keeps all texts within TEXT_BUDGET bytes.

Hover shows the instruction, its source, perplexity, length group, cluster (with its top terms) and whether
it was selected; source checkboxes, a length-group select and "selected only" filter the points. A URL hash
sets the same filters (`report.html#map?source=a,b&group=0&selected=1`) and `hover=<point>` pins one
point's tooltip, so a view can be linked — and so the headless-browser test can check the filters. The
canvas carries `data-points` (all points) and `data-drawn` (points drawn after filtering).
"""

from __future__ import annotations

import html
import json
from typing import Sequence

import numpy as np

TEXT_BUDGET = 6_000_000  # bytes of instruction text in the page, over all points (UTF-8: 3 bytes per Hangul syllable)
TEXT_CHARS = (60, 240)  # the per-point cut stays within these many characters
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]

CSS = """.kq-map{margin:.5em 0 1em}.kq-controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;
font-size:13px;margin-bottom:.4em}.kq-controls label{white-space:nowrap;cursor:pointer}.kq-swatch{display:inline-block;
width:10px;height:10px;border-radius:50%;margin:0 4px 0 2px;vertical-align:middle}.kq-plot{position:relative;
border:1px solid #e3e3e3}.kq-plot canvas{display:block;width:100%;height:620px;cursor:crosshair}
.kq-tip{position:absolute;max-width:420px;background:#fff;border:1px solid #999;border-radius:4px;padding:6px 8px;
font-size:12px;box-shadow:0 2px 6px rgba(0,0,0,.2);pointer-events:none;white-space:pre-wrap;z-index:2}
.kq-tip b{display:block;margin-bottom:3px;font-weight:600}.kq-legend{font-size:12px;color:#555;margin-top:.3em}
.kq-legend span{margin-right:1em;white-space:nowrap}.kq-status{color:#555}"""

SCRIPT = r"""(function () {
  var root = document.getElementById('kq-map');
  var d = JSON.parse(document.getElementById('kq-map-data').textContent);
  var canvas = root.querySelector('canvas'), ctx = canvas.getContext('2d');
  var tip = root.querySelector('.kq-tip'), status = root.querySelector('.kq-status');
  var legend = root.querySelector('.kq-legend');
  var boxes = root.querySelectorAll('input[data-source]');
  var groupSelect = root.querySelector('select[data-role=group]');
  var colourSelect = root.querySelector('select[data-role=colour]');
  var selectedOnly = root.querySelector('input[data-role=selected-only]');
  var n = d.x.length, grid = {}, cell = 12, pad = 12, shown = [], pinned = -1;
  var palette = d.palette;

  function colour(i) {
    var mode = colourSelect.value;
    if (mode === 'group') return palette[d.g[i] % palette.length];
    if (mode === 'selected') return d.k[i] ? '#C44E52' : '#8C8C8C';
    return palette[d.s[i] % palette.length];
  }
  function visible(i) {
    return boxes[d.s[i]].checked && (groupSelect.value === 'all' || d.g[i] === +groupSelect.value)
      && (!selectedOnly.checked || d.k[i] === 1);
  }
  function px(i) { return pad + d.x[i] / 10000 * (canvas.clientWidth - 2 * pad); }
  function py(i) { return canvas.clientHeight - pad - d.y[i] / 10000 * (canvas.clientHeight - 2 * pad); }

  function drawLegend() {
    var mode = colourSelect.value, items = [];
    if (mode === 'group') d.groups.forEach(function (g, j) { items.push([palette[j % palette.length], 'length group ' + g]); });
    else if (mode === 'selected') items = [['#C44E52', 'selected'], ['#8C8C8C', 'not selected']];
    else d.sources.forEach(function (s, j) { items.push([palette[j % palette.length], s]); });
    legend.textContent = '';
    items.forEach(function (item) {
      var span = document.createElement('span'), dot = document.createElement('i');
      dot.className = 'kq-swatch'; dot.style.background = item[0];
      span.appendChild(dot); span.appendChild(document.createTextNode(item[1])); legend.appendChild(span);
    });
    var key = document.createElement('span');
    key.textContent = 'large, dark-ringed points: selected · small, faded: not selected · x: ' + d.axes[0] + ', y: ' + d.axes[1];
    legend.appendChild(key);
  }

  function draw() {
    var ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * ratio); canvas.height = Math.round(canvas.clientHeight * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
    grid = {}; shown = [];
    var kept = 0, pass, i;
    for (pass = 0; pass < 2; pass++) {  // the selected rows on top
      for (i = 0; i < n; i++) {
        if (d.k[i] !== pass || !visible(i)) continue;
        var x = px(i), y = py(i), key = Math.floor(x / cell) + ',' + Math.floor(y / cell);
        (grid[key] = grid[key] || []).push(i); shown.push(i);
        ctx.beginPath(); ctx.arc(x, y, pass ? 3.5 : 2.2, 0, 6.2832);
        ctx.globalAlpha = pass ? 0.95 : 0.35; ctx.fillStyle = colour(i); ctx.fill();
        if (pass) { ctx.globalAlpha = 1; ctx.lineWidth = 1; ctx.strokeStyle = '#222'; ctx.stroke(); kept++; }
      }
    }
    ctx.globalAlpha = 1;
    canvas.setAttribute('data-drawn', String(shown.length));
    status.textContent = shown.length.toLocaleString() + ' of ' + n.toLocaleString() + ' points shown, '
      + kept.toLocaleString() + ' of them selected';
    drawLegend();
    if (pinned >= 0) showTip(pinned);
  }

  function showTip(i) {
    if (i < 0) { tip.hidden = true; return; }
    var title = document.createElement('b');
    title.textContent = d.t[i];
    var cluster = d.g[i] + '-' + d.c[i];
    tip.textContent = '';
    tip.appendChild(title);
    tip.appendChild(document.createTextNode(
      'source: ' + d.sources[d.s[i]] + '\nperplexity: ' + d.p[i] + '\n' + (d.k[i] ? 'selected' : 'not selected')
      + '\nlength group ' + d.g[i] + ', cluster ' + d.c[i] + (d.names[cluster] ? ' (' + d.names[cluster] + ')' : '')));
    tip.setAttribute('data-point', String(i));
    tip.hidden = false;
    var x = px(i) + 12, y = py(i) + 12;
    if (x + tip.offsetWidth > canvas.clientWidth) x = Math.max(0, px(i) - tip.offsetWidth - 12);
    if (y + tip.offsetHeight > canvas.clientHeight) y = Math.max(0, py(i) - tip.offsetHeight - 12);
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  }

  function nearest(x, y) {
    var best = -1, bestDistance = 64, cx = Math.floor(x / cell), cy = Math.floor(y / cell);
    for (var a = cx - 1; a <= cx + 1; a++) for (var b = cy - 1; b <= cy + 1; b++) {
      (grid[a + ',' + b] || []).forEach(function (i) {
        var dx = px(i) - x, dy = py(i) - y, dist = dx * dx + dy * dy;
        if (dist <= bestDistance) { bestDistance = dist; best = i; }
      });
    }
    return best;
  }

  canvas.addEventListener('mousemove', function (event) {
    var box = canvas.getBoundingClientRect();
    pinned = -1; showTip(nearest(event.clientX - box.left, event.clientY - box.top));
  });
  canvas.addEventListener('mouseleave', function () { if (pinned < 0) tip.hidden = true; });
  [groupSelect, colourSelect, selectedOnly].concat(Array.prototype.slice.call(boxes)).forEach(function (el) {
    el.addEventListener('change', draw);
  });
  window.addEventListener('resize', draw);

  // #map?source=a,b&group=0&selected=1&colour=group&hover=12 sets the filters (and pins a tooltip)
  var hash = decodeURIComponent(location.hash || '');
  if (hash.indexOf('#map?') === 0) {
    hash.slice(5).split('&').forEach(function (pair) {
      var kv = pair.split('='), k = kv[0], v = kv.slice(1).join('=');
      if (k === 'source') {
        var wanted = v.split(',');
        boxes.forEach(function (box, j) { box.checked = wanted.indexOf(d.sources[j]) >= 0; });
      } else if (k === 'group') groupSelect.value = v;
      else if (k === 'colour') colourSelect.value = v;
      else if (k === 'selected') selectedOnly.checked = v === '1';
      else if (k === 'hover' && +v >= 0 && +v < n) pinned = +v;
    });
  }
  draw();
})();"""


def _unit(values: np.ndarray) -> np.ndarray:
    """Coordinates as integers 0…10000 (5 characters a point instead of 18): far finer than any screen."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return values.astype(np.int64)
    low, high = np.nanmin(values), np.nanmax(values)
    span = high - low if high > low else 1.0
    return np.rint((values - low) / span * 10000).astype(np.int64)


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _script_json(data: dict) -> str:
    """JSON that is safe inside <script type=application/json>: no '<', '>' or '&' can end the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def map_html(xy: np.ndarray, sources: Sequence[str], len_group: np.ndarray, cluster: np.ndarray, ppl: np.ndarray,
             selected: np.ndarray, texts: Sequence[str], cluster_names: dict[tuple[int, int], str] | None = None,
             axes: tuple[str, str] = ("PC1", "PC2"), boundaries: Sequence[float] | None = None) -> str:
    """The map's HTML (controls, canvas, inline JSON data and script) for the points given, one per row.

    `sources` and `texts` are per point; `cluster_names` maps (length group, cluster) to a short name;
    `boundaries` are the length-group boundaries (q0…q(L−1)) for the length-group select's labels."""
    n = len(xy)
    names = sorted(set(sources))
    source_index = {name: j for j, name in enumerate(names)}
    groups = sorted({int(g) for g in len_group})
    limit = int(np.clip(TEXT_BUDGET // (3 * max(n, 1)), *TEXT_CHARS))
    ppl = np.asarray(ppl, dtype=np.float64)
    data = {
        "x": _unit(xy[:, 0]).tolist() if n else [], "y": _unit(xy[:, 1]).tolist() if n else [],
        "s": [source_index[s] for s in sources],
        "g": [int(g) for g in len_group], "c": [int(c) for c in cluster],
        "p": [float(f"{p:.4g}") if np.isfinite(p) else None for p in ppl],
        "k": [1 if s else 0 for s in selected],
        "t": [_cut(t, limit) for t in texts],
        "sources": names, "groups": groups, "axes": list(axes), "palette": PALETTE,
        "names": {f"{g}-{c}": name for (g, c), name in (cluster_names or {}).items() if name},
    }
    counts = {name: 0 for name in names}
    for s in sources:
        counts[s] += 1
    source_boxes = "".join(
        f"<label><input type='checkbox' data-source='{j}' checked><i class='kq-swatch' "
        f"style='background:{PALETTE[j % len(PALETTE)]}'></i>{html.escape(name)} ({counts[name]:,})</label>"
        for j, name in enumerate(names))

    def group_label(g: int) -> str:
        """Group g holds q_g ≤ length < q_(g+1) (the first: below q_1, the last: from q_(L−1))."""
        b = list(boundaries or [])
        if len(b) < 2 or g >= len(b):
            return f"{g}"
        if g == 0:
            return f"0 (< {b[1]:g} chars)"
        return f"{g} ({b[g]:g} to < {b[g + 1]:g} chars)" if g + 1 < len(b) else f"{g} (≥ {b[g]:g} chars)"

    options = "".join(f"<option value='{g}'>{html.escape(group_label(g))}</option>" for g in groups)
    return (f"<div class='kq-map' id='kq-map'><div class='kq-controls'><span>source:</span>{source_boxes}"
            f"<label>length group <select data-role='group'><option value='all'>all</option>{options}</select></label>"
            f"<label>colour by <select data-role='colour'><option value='source'>source</option>"
            f"<option value='group'>length group</option><option value='selected'>selected or not</option></select></label>"
            f"<label><input type='checkbox' data-role='selected-only'> selected rows only</label>"
            f"<span class='kq-status'></span></div>"
            f"<div class='kq-plot'><canvas data-points='{n}' data-drawn='0' role='img' "
            f"aria-label='2-D map of the instruction embeddings'></canvas><div class='kq-tip' hidden></div></div>"
            f"<div class='kq-legend'></div>"
            f"<script type='application/json' id='kq-map-data'>{_script_json(data)}</script>"
            f"<script>{SCRIPT}</script></div>")
