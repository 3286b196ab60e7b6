"""`replaylab report`: one HTML page from real tiny runs (a compare grid and two meta runs),
its figures, tables and numbers, and its rendering in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import shutil
import statistics
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from replaylab.analysis.aggregate import aggregate, find_run_dirs, load_runs
from replaylab.cli import main
from tests.conftest import overrides
from tests.test_compare import GRID_ARGS, GRID_SETTINGS
from tests.test_meta import META

REPS = 100
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Parsed(HTMLParser):
    """The report's figures ([(data-figure, img src)]), tables ({data-table: [header, *rows]})
    and <body> attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: list[tuple[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.body: dict[str, str] = {}
        self.links: list[str] = []
        self._figure = self._table = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "figure":
            self._figure = a["data-figure"]
        elif tag == "img":
            self.figures.append((self._figure, a["src"]))
        elif tag == "table":
            self._table = self.tables.setdefault(a["data-table"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _dicts(table: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(table[0], row)) for row in table[1:]]


def _png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A compare grid (uniform, mixup on Pendulum-v1, 2 seeds) and two meta runs (PEARL and
    multi-task SAC on the point robot, 2 seeds), all real and tiny."""
    root = tmp_path_factory.mktemp("report")
    # in this process (--workers 1): no interpreter or JAX start-up per cell
    assert main(["compare", *GRID_ARGS, "--workers", "1", "--out", str(root / "grid"), *overrides(GRID_SETTINGS)]) == 0
    for inference in ("pearl", "none"):
        cfg = {**META, "seeds": 2, "inference": inference, "run_dir": str(root / "meta" / inference)}
        if inference == "none":
            cfg = {k: v for k, v in cfg.items() if not k.startswith("inference.")}
        assert main(["train", *overrides(cfg)]) == 0
    return root


@pytest.fixture(scope="module")
def report(runs):
    out = runs / "out" / "all.html"
    assert main(["report", str(runs / "grid"), str(runs / "meta"), "--out", str(out), "--reps", str(REPS)]) == 0
    return out, Parsed(out.read_text())


def test_the_page_holds_every_figure_as_an_embedded_png(runs, report):
    out, page = report
    # offline: every image is a data URI, links only point inside the page, no URL at all
    assert all(src.startswith("data:image/png;base64,") for _, src in page.figures)
    assert all(link.startswith(("data:", "#")) for link in page.links)
    assert "http://" not in out.read_text() and "https://" not in out.read_text()
    # per env: curves, IQM, profile, probability of improvement (two methods on each);
    # over all envs (only none-uniform ran on both): IQM and profile; meta: per-task returns,
    # PEARL's encodings, both runs' time response
    assert Counter(kind for kind, _ in page.figures) == {"curves": 2, "iqm": 3, "profile": 3, "poi": 2,
                                                          "per-task": 1, "encodings": 1, "response": 2}
    for kind, src in page.figures:
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        pixels = _png_pixels(png)
        assert pixels.shape[0] >= 150 and pixels.shape[1] >= 300, (kind, pixels.shape)
        assert len(png) > 8000 and (pixels < 200).any(axis=-1).mean() > 0.01, kind  # drawn, not blank
    # the encodings figure is the one the PEARL run wrote at its last evaluation
    encodings = next(src for kind, src in page.figures if kind == "encodings")
    newest = runs / "meta" / "pearl" / "encodings" / "step_0000000800.png"
    assert base64.b64decode(encodings.split(",", 1)[1]) == newest.read_bytes()


def test_the_numbers_are_compares_and_the_settings_and_sps_are_the_runs(runs, report):
    _, page = report
    root = runs
    records = load_runs(find_run_dirs([root / "grid", root / "meta"]), warn=lambda msg: None)
    # labelled by settings (the meta runs come from no grid): the agent's inference in front
    assert sorted(r.method for r in records) == ["none-mixup", "none-uniform", "none-uniform", "pearl-uniform"]
    for env in ("Pendulum-v1", "meta:point-robot"):
        subset = [r for r in records if r.env == env]
        want = aggregate(subset, reps=REPS, methods=sorted({r.method for r in subset}))
        assert [[r["method"], r["metric"], str(r["budget"]), f"{r['iqm']:.2f}", f"[{r['ci_low']:.2f}, "
                 f"{r['ci_high']:.2f}]", str(r["n_runs"])] for r in want] == page.tables[f"iqm:{env}"][1:]
    assert {r["method"] for r in _dicts(page.tables["iqm:all"])} == {"none-uniform"}
    for env, pair in (("Pendulum-v1", ["none-mixup", "none-uniform"]),
                      ("meta:point-robot", ["none-uniform", "pearl-uniform"])):
        (row,) = page.tables[f"poi:{env}"][1:]
        assert row[:2] == pair
        p, (lo, hi) = float(row[2]), map(float, row[3].strip("[]").split(","))
        assert 0.0 <= lo <= p <= hi <= 1.0

    # the settings table: the keys that differ, per run; the rest shared
    settings = _dicts(page.tables["settings"])
    assert {"env", "inference", "replay", "batch_size"} <= settings[0].keys()
    assert not {"agent", "run_dir", "progress_bar", "seeds"} & settings[0].keys()
    by_dir = {Path(s["run directory"]).relative_to(root).as_posix(): s for s in settings}
    assert (by_dir["grid/runs/Pendulum-v1-mixup"]["replay"], by_dir["grid/runs/Pendulum-v1-uniform"]["replay"]) \
        == ("mixup", "uniform")
    assert (by_dir["meta/pearl"]["inference"], by_dir["meta/none"]["inference"], by_dir["meta/none"]["env"]) \
        == ("pearl", "none", "meta:point-robot")
    assert by_dir["meta/pearl"]["inference.latent_dim"] == "2" and by_dir["meta/none"]["inference.latent_dim"] == "—"
    shared = {k: v for k, v in page.tables["shared-settings"][1:]}
    assert shared["agent"] == "sac" and shared["seeds"] == "2" and "run_dir" not in shared

    # throughput from each run's progress.csv: wall time and SPS at the last evaluation, median SPS
    throughput = _dicts(page.tables["throughput"])
    assert len(throughput) == 4
    for row in throughput:
        with open(Path(row["run directory"]) / "progress.csv") as f:
            per_step = {int(r["env_step"]): r for r in csv.DictReader(f)}
        last = max(per_step)
        wall = float(per_step[last]["wall_time"])
        assert row["wall time (s)"] == f"{wall:.1f}" and row["SPS overall"] == f"{last / wall:.1f}"
        assert row["SPS median"] == f"{statistics.median(float(r['sps']) for r in per_step.values()):.1f}"
        assert row["SPS x seeds"] == f"{2 * last / wall:.1f}" and float(row["SPS overall"]) > 0


def test_a_compare_folder_alone_keeps_the_grid_names_and_writes_report_html_into_it(runs, capsys):
    assert main(["report", str(runs / "grid"), "--reps", str(REPS)]) == 0
    out = runs / "grid" / "report.html"
    assert f"wrote {out}" in capsys.readouterr().out
    page = Parsed(out.read_text())
    assert sorted(r["method"] for r in _dicts(page.tables["runs"])) == ["mixup", "uniform"]
    assert Counter(kind for kind, _ in page.figures) == {"curves": 1, "iqm": 1, "profile": 1, "poi": 1}
    assert not list((runs / "grid").glob(".report.html.tmp-*"))


def test_a_run_that_cannot_be_read_is_left_out_with_a_note(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = tmp_path / "r.html"
    assert main(["report", str(runs / "grid"), str(broken), "--out", str(out), "--reps", str(REPS)]) == 0
    assert f"left out: run {broken}: config.json cannot be parsed" in capsys.readouterr().err
    text = out.read_text()
    assert f'<p class="warn">left out: run {broken}: config.json cannot be parsed' in text
    assert len(_dicts(Parsed(text).tables["runs"])) == 2


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not found (looked for " + ", ".join(BROWSERS) + " on PATH); install the "
                "distribution's package, e.g. 'apt-get install chromium' (as root, 'make test' tries)")


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    browser = _browser()
    out, page = report
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", out.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = Parsed(dom.stdout)
    # the page's own script counted the images the browser decoded (naturalWidth > 0)
    n = len(page.figures)
    assert (rendered.body.get("data-images-decoded"), rendered.body.get("data-images-total")) == (str(n), str(n))
    assert dom.stdout.count('class="warn"') == out.read_text().count('class="warn"')  # no failure note added
    shot = tmp_path / "shot.png"
    r = subprocess.run([*flags, "--window-size=1280,2400", f"--screenshot={shot}", out.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    pixels = _png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (2400, 1280)
    drawn = (pixels < 200).any(axis=-1)
    assert drawn.mean() > 0.02  # text, tables and figures, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # colour figures, not only text


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replaylab: error: ") and needle in lines[0], err


def test_bad_input_is_one_line_and_exit_code_2(runs, tmp_path, capsys):
    _one_line_error(main(["report", str(tmp_path / "nope")]), capsys.readouterr().err,
                    f"DIR {tmp_path / 'nope'}: no such directory")
    (tmp_path / "empty").mkdir()
    _one_line_error(main(["report", str(tmp_path / "empty")]), capsys.readouterr().err,
                    "no replaylab run directory (a folder with config.json) in it")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes(b"\xff{not json")
    _one_line_error(main(["report", str(bare)]), capsys.readouterr().err, "config.json cannot be parsed")
    _one_line_error(main(["report", str(runs / "grid"), "--out", str(tmp_path)]), capsys.readouterr().err,
                    "is a directory")
    _one_line_error(main(["report", str(runs / "grid"), "--reps", "0"]), capsys.readouterr().err,
                    "--reps=0: expected an integer >= 1")
    assert not list(tmp_path.rglob("*.html"))
