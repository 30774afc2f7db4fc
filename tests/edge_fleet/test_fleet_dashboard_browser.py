"""The dashboard in a real browser: headless Debian Chromium loads the page from a running `serve`, the page's
JavaScript fetches the API and builds the DOM, and the test reads what a person would see.

`--dump-dom` prints the DOM after the scripts ran (`--virtual-time-budget` lets the page's timers and fetches
finish first); `--screenshot` renders it. Chromium is a test dependency (`make test` installs the Debian package):
when it is missing this test fails, it does not skip, so a machine without it cannot pass unnoticed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edge_fleet.history import FleetHistory
from edge_fleet.serve import build_server
from edge_fleet.state import FleetState
from tests.support.fleet_dashboard_data import feed_sample_fleet, status

CHROMIUM_TIMEOUT_S = 90
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--virtual-time-budget=5000"]

pytestmark = pytest.mark.browser  # every test here drives headless Chromium


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: this test drives the dashboard in headless Chromium. Install the "
                    "Debian package: `apt-get install -y chromium` (`make test` does it).", pytrace=False)
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S,
                                cwd=tmp_path)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT_S} s: {error.stderr!r}"[-2000:])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Descendants with this tag and these attribute values (`class_` for class, `data_x` for data-x)."""
        wanted = {key.rstrip("_").replace("_", "-"): value for key, value in attrs.items()}
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                        (value in child.attrs.get(key, "").split()) if key == "class" else
                        (child.attrs.get(key) == value if value is not True else key in child.attrs)
                        for key, value in wanted.items()):
                    found.append(child)
                found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class DomParser(HTMLParser):
    """A small tree builder over the serialised DOM Chromium prints (the stdlib has no HTML tree)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {key: value or "" for key, value in attrs}, self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, {key: value or "" for key, value in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> Node:
    parser = DomParser()
    parser.feed(html)
    return parser.root


@pytest.fixture
def dashboard(tmp_path):
    """`serve` on a free loopback port with the sample fleet; yields its base URL."""
    chromium()  # fail first, with the clear message, when the browser is missing
    state = FleetState(prefix="edge")
    history = FleetHistory(tmp_path / "history.sqlite", sample_every_s=10)
    feed_sample_fleet(state, history)
    server = build_server(state, history, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)
    history.close()


def test_dashboard_renders_the_fleet_in_chromium(dashboard, tmp_path):
    result = run_chromium(tmp_path, "--dump-dom", f"{dashboard}/#device=pi-02")
    dom = parse(result.stdout)
    table = dom.one("table", id="fleet-table")
    rows = {row.attrs["data-device"]: row for row in table.all("tr", data_device=True)}
    assert sorted(rows) == ["pi-01", "pi-02", "pi-03", "pi-04"], result.stdout[:3000]
    states = {device: row.one("td", class_="state").text().strip() for device, row in rows.items()}
    assert states == {"pi-01": "online", "pi-02": "offline", "pi-03": "online", "pi-04": "online"}
    assert rows["pi-02"].attrs["data-state"] == "offline"
    assert "degraded" in rows["pi-03"].one("td", class_="backend").text()
    assert "drift" in rows["pi-03"].one("td", class_="drift").text()
    assert rows["pi-01"].one("td", class_="throughput").text().endswith("/s")
    assert "ms" in rows["pi-01"].one("td", class_="p95").text()
    assert "ago" in rows["pi-02"].one("td", class_="last-seen").text()
    assert "selected" in rows["pi-02"].attrs.get("class", "")

    counts = {node.attrs["data-count"]: node.one("b").text() for node in dom.one(id="counts").all(class_="count")}
    assert counts == {"total": "4", "online": "3", "offline": "1", "degraded": "1", "drift": "1"}

    alerts = dom.one("ul", id="alerts").all("li")
    kinds = {(item.attrs.get("data-device"), item.attrs.get("data-kind")) for item in alerts}
    assert ("pi-02", "offline") in kinds
    assert {("pi-03", "drift"), ("pi-03", "degraded"), ("pi-04", "deploy_failed")} <= kinds
    offline = next(item for item in alerts if item.attrs.get("data-kind") == "offline")
    assert "pi-02" in offline.text() and "offline" in offline.text()

    assert dom.one(id="connection").text().startswith("updated"), dom.one(id="connection").text()


def test_dashboard_draws_device_charts(dashboard, tmp_path):
    result = run_chromium(tmp_path, "--dump-dom", f"{dashboard}/#device=pi-02")
    dom = parse(result.stdout)
    panel = dom.one("section", id="device-panel")
    assert "hidden" not in panel.attrs and panel.attrs["data-device"] == "pi-02"
    assert dom.one(id="device-title").text() == "pi-02"
    charts = {figure.attrs["data-chart"]: figure for figure in dom.one(id="device-charts").all("figure")}
    assert set(charts) == {"throughput", "latency_p95", "drift", "online"}
    for name in ("throughput", "latency_p95", "drift"):
        lines = charts[name].all("path", data_model="activity")
        assert lines, f"no line in the {name} chart"
        assert all(line.attrs["d"].startswith("M") and line.attrs["d"].count("L") + line.attrs["d"].count("H") > 10
                   for line in lines)
    spans = [rect.attrs["data-state"] for rect in charts["online"].all("rect")]
    assert spans == ["online", "offline"]


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", header[16:24])


def test_dashboard_screenshot(dashboard, tmp_path):
    shot = tmp_path / "dash.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,800", f"{dashboard}/#device=pi-03")
    assert shot.exists(), "chromium wrote no screenshot"
    assert _png_size(shot) == (1280, 800)
    assert shot.stat().st_size > 20_000  # a blank or error page compresses to a few KB
    from PIL import Image

    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        colors = pixels.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 200
        # the dark header bar and the red "offline" pill are there
        assert pixels.getpixel((5, 5))[0] < 60
        assert any(r > 150 and g < 80 and b < 80 for _, (r, g, b) in colors)


def test_device_text_is_never_html(tmp_path):
    """Device ids and details come from the network: the page must show them as text, not run them."""
    chromium()
    state = FleetState(prefix="edge")
    hostile = '<img src=x onerror="document.title=1">'
    state.ingest(f"edge/{hostile}/status", status(hostile, group="<b>lab</b>"), retained=True)
    history = FleetHistory(tmp_path / "history.sqlite")
    server = build_server(state, history, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        history.close()
    dom = parse(result.stdout)
    row = dom.one("table", id="fleet-table").one("tr", data_device=hostile)
    assert hostile in row.text() and "<b>lab</b>" in row.text()
    assert not dom.one("table", id="fleet-table").all("img") and not row.all("b")
    assert dom.one("title").text() == "edge-fleet"
