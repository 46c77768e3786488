"""Checks of a report page, shared by the report tests: an HTML parser that reads back ids,
classes, table cells, plotly's drawn plots and hover box; the page's offline checks; plotly's
figure data read back from the page; and a headless Chromium that loads it with a probe."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

SECTIONS = ("summary", "timeline", "throughput", "failures", "slowest", "text-layer", "gpu")
PLOTS = ("timeline-plot", "throughput-plot")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# First thing in <head>: records uncaught errors, failed loads, console.error and alert() calls,
# and writes them into the DOM after load, where --dump-dom shows them.
PROBE = """<script>(() => {
  const probe = {errors: [], alerts: 0};
  const note = (m) => probe.errors.push(String(m).slice(0, 300));
  addEventListener("error", (e) => note(e.message ? "uncaught: " + e.message
      : "failed to load: <" + (e.target && e.target.tagName) + "> "
        + ((e.target && (e.target.src || e.target.href)) || "")), true);
  addEventListener("unhandledrejection", (e) => note("unhandled rejection: " + e.reason));
  const error = console.error.bind(console);
  console.error = (...a) => { note("console.error: " + a.join(" ")); error(...a); };
  window.alert = window.confirm = window.prompt = () => { probe.alerts += 1; };
  addEventListener("load", () => setTimeout(() => {
    const out = document.createElement("pre"); out.id = "__probe"; out.textContent = JSON.stringify(probe);
    document.body.appendChild(out);
  }, 1000));
})();</script>"""


class Page(HTMLParser):
    """Elements of a page: tags, attributes, ids, classes, the text of each table's cells, and which ids
    hold a plotly SVG (`main-svg`) or bars (`point`), and the text of plotly's hover box."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()
        self.classes: set[str] = set()
        self.cells: dict[str, list[str]] = {}
        self.svg_in: set[str] = set()
        self.points: dict[str, int] = {}
        self.scripts: list[int] = []
        self.hover = ""
        self._stack: list[tuple[str, str | None, list[str]]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        classes = (a.get("class") or "").split()
        self.classes.update(classes)
        ancestors = [i for _, i, _ in self._stack if i]
        if "main-svg" in classes:
            self.svg_in.update(ancestors)
        if "point" in classes:
            for i in ancestors:
                self.points[i] = self.points.get(i, 0) + 1
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id")
        if tag == "td" and self._table:
            self._cell = []
        self._script = tag == "script"
        if tag not in VOID:
            self._stack.append((tag, a.get("id"), classes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            self.cells.setdefault(self._table, []).append("".join(self._cell))
            self._cell = None
        if tag == "table":
            self._table = None
        self._script = False
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script:
            self.scripts.append(len(data))
        if any("hovertext" in classes for _, _, classes in self._stack):
            self.hover += data + "\n"


def check_page(text: str) -> Page:
    """The page is one offline document: plotly.js inlined once, nothing external, no handlers."""
    page = Page(text)
    assert sum(size > 1_000_000 for size in page.scripts) == 1  # plotly.js inlined exactly once
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)  # no event handler attributes at all
            if name in ("src", "href"):
                assert not (value or "").lower().startswith(("http:", "https:", "//")), (tag, value)
        assert tag not in ("img", "svg", "iframe", "object", "embed", "link", "base"), tag
    return page


def plot_data(text: str, div_id: str) -> list[dict]:
    """The traces of a plot, read back from the page's `Plotly.newPlot("div_id", [...], ...)` call."""
    call = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', text)
    assert call, f"no plot {div_id}"
    return json.JSONDecoder().raw_decode(text, call.end())[0]


def plot_layout(text: str, div_id: str) -> dict:
    """The layout of a plot, read back from the page's `Plotly.newPlot("div_id", [...], {...}, ...)` call."""
    call = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', text)
    assert call, f"no plot {div_id}"
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(text, call.end())
    return decoder.raw_decode(text, re.compile(r",\s*").match(text, end).end())[0]


def array(value) -> np.ndarray:
    """A plotly array: a list, or a typed array ({"dtype", "bdata" in base64, "shape"})."""
    if isinstance(value, dict):
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value)


def browse(chromium: str, report: Path, tmp: Path, *extra: str, inject: str = "") -> tuple[Page, dict, str]:
    """Load the report (with the probe, and `inject` after it) headless with every host name
    unresolvable; returns the DOM after its scripts ran, the probe's findings, chromium's stderr."""
    probed = tmp / f"probed-{report.parent.name}.html"
    probed.write_text(
        report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE + inject, 1), encoding="utf-8"
    )
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp / 'profile'}",
            *extra,
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    page = Page(done.stdout)
    marker = done.stdout.split('<pre id="__probe">', 1)
    if "--dump-dom" in extra:
        assert len(marker) == 2, f"the page never finished loading; chromium said:\n{done.stderr[-3000:]}"
        probe = json.loads(html.unescape(marker[1].split("</pre>", 1)[0]))
    else:
        probe = {}
    return page, probe, done.stderr


def uncaught(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]


def rendered(
    chromium: str, report: Path, tmp: Path, plots: tuple[str, ...], inject: str = "", screenshot: Path | None = None
) -> Page:
    """The report's DOM once its scripts ran: no error, no alert, every section, every plot drawn; with
    `screenshot`, the page drawn there too by the same browser (1400x2600), to look at."""
    shot = (f"--screenshot={screenshot}", "--window-size=1400,2600") if screenshot else ()
    page, probe, stderr = browse(chromium, report, tmp, "--dump-dom", *shot, inject=inject)
    assert probe == {"errors": [], "alerts": 0}, probe
    assert not uncaught(stderr), uncaught(stderr)
    assert set(SECTIONS) <= page.ids
    assert set(plots) <= page.svg_in, f"plots not drawn: {set(plots) - page.svg_in}"
    return page
