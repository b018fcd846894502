"""What a user sees in MLflow's UI after a sweep, rendered in a real headless Chromium.

``make ui-check`` (or ``python benchmarks/ui_check.py``): on the work folder's local store
(a finished smoke sweep; one is run first when the store has none), start ``mlflow server``,
render the experiment page, the sweep's parent run, a finished trial and the registered
model with ``chromium --headless``, save a screenshot and the rendered DOM of each under
``<workdir>/ui-check/``, and check from the DOM that:

- the experiment opens in the model-training view (not GenAI's trace overview);
- the parent run's description is the sweep summary (champion, reference beside it);
- a trial shows no more than a few dozen metrics;
- the registered model and its version carry their descriptions.

Prints one line per check and the seconds each step took; exits 1 when a check fails.
Needs Chromium (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from asd.tracking.uri import TRAINING_VIEW

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAX_METRICS = 40
"""The most metrics a trial's run page may list (a few dozen charts, not hundreds)."""
BUDGET_MS = 15000
"""Chromium's virtual-time budget per page: the UI's requests settle well inside it."""
EXPERIMENT = "asd"


@dataclass
class Page:
    """One rendered page: its name, URL, screenshot and DOM."""

    name: str
    url: str
    screenshot: Path
    dom: str = ""
    text: str = ""


@dataclass
class Report:
    """Checks and step timings of one run."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[step] = time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "asd-work")
    parser.add_argument("--space", type=Path, default=REPO / "search_spaces" / "smoke.yaml")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "chromium"))
    parser.add_argument("--model-name", default="asd-encoder")
    args = parser.parse_args(argv)
    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(
            f"ui-check: no {args.chromium!r} on PATH: apt-get install -y chromium", file=sys.stderr
        )
        return 2
    workdir = args.workdir.resolve()
    out = workdir / "ui-check"
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    db = workdir / "mlflow.db"
    uri = f"sqlite:///{db}"
    if _finished_parent(uri) is None:
        with report.timed("sweep"):
            _sweep(args.space, workdir)
    with _server(db, workdir, report) as base:
        ids = _ids(uri, args.model_name)
        pages = _pages(base, ids, out)
        for page in pages:
            with report.timed(f"render {page.name}"):
                _render(chromium, page)
        _checks(report, pages, ids)
    total = sum(report.seconds.values())
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    print(f"total {total:.1f}s; screenshots and DOMs in {out}")
    return 0 if all(ok for _, ok, _ in report.checks) else 1


# --------------------------------------------------------------------------- the store


def _client(uri: str):  # noqa: ANN202 - mlflow is imported lazily
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _finished_parent(uri: str):  # noqa: ANN202
    """The newest FINISHED parent run of the experiment, or None."""
    if not uri.startswith("sqlite:///") or not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    client = _client(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        "attributes.status = 'FINISHED' and tags.`asd.best_trial_id` != 'None'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    return next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), None)


def _sweep(space: Path, workdir: Path) -> None:
    """A smoke sweep into ``workdir`` (synthetic data, in-process Ray), promoted."""
    cmd = [str(BIN / "asd"), "sweep", "--space", str(space), "--workdir", str(workdir)]
    print("running " + " ".join(cmd), flush=True)
    subprocess.run([*cmd, "--promote"], check=True, cwd=REPO)


@dataclass(frozen=True)
class Ids:
    """What the pages are about: the experiment, the sweep, a trial, the model version."""

    experiment: str
    parent: str
    trial: str
    champion_trial: str
    model: str
    version: str


def _ids(uri: str, model: str) -> Ids:
    client = _client(uri)
    parent = _finished_parent(uri)
    if parent is None:
        raise SystemExit(f"ui-check: no finished sweep in {uri}")
    exp = parent.info.experiment_id
    best = parent.data.tags["asd.best_trial_id"]
    children = client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000
    )
    trial = next(r for r in children if r.data.tags.get("asd.trial_id") == best)
    version = parent.data.tags.get("asd.model_version", "1")
    return Ids(exp, parent.info.run_id, trial.info.run_id, best, model, version)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(db: Path, workdir: Path, report: Report) -> Iterator[str]:
    """``mlflow server`` on the store, one worker, no job runner; yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = open(workdir / "ui-check" / "server.log", "w")  # noqa: SIM115 - closed below
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}"]
    cmd += ["--artifacts-destination", str(workdir / "mlartifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with report.timed("server start"):
            _wait(f"{base}/health", proc, workdir / "ui-check" / "server.log")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ui-check: mlflow server exited; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"ui-check: mlflow server not healthy after {timeout_s:.0f}s; see {log}")


# --------------------------------------------------------------------------- the browser


def _pages(base: str, ids: Ids, out: Path) -> list[Page]:
    """The pages a user opens: from the link `asd sweep` prints (model-training view), and
    the experiment's bare address as a fresh browser opens it (MLflow's GenAI default)."""
    exp = f"{base}/#/experiments/{ids.experiment}"
    view = f"?{TRAINING_VIEW}"
    urls = {
        "experiment": f"{exp}{view}",
        "experiment-bare": exp,
        "parent-run": f"{exp}/runs/{ids.parent}{view}",
        "trial-run": f"{exp}/runs/{ids.trial}{view}",
        "trial-metrics": f"{exp}/runs/{ids.trial}/model-metrics{view}",
        "model": f"{base}/#/models/{ids.model}",
        "model-version": f"{base}/#/models/{ids.model}/versions/{ids.version}",
    }
    return [Page(name, url, out / f"{name}.png") for name, url in urls.items()]


def _render(chromium: str, page: Page) -> None:
    """Screenshot and rendered DOM of one page, from one headless Chromium run."""
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += ["--window-size=1600,1400", f"--virtual-time-budget={BUDGET_MS}"]
    cmd += [f"--screenshot={page.screenshot}", "--dump-dom", page.url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    page.dom = done.stdout
    page.screenshot.with_suffix(".html").write_text(page.dom)
    page.text = _text(page.dom)


def _text(dom: str) -> str:
    """The visible words of a DOM: tags, scripts and styles stripped, spaces collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).strip()


# --------------------------------------------------------------------------- the checks


def _checks(report: Report, pages: list[Page], ids: Ids) -> None:
    by = {p.name: p for p in pages}
    for page in pages:
        report.check(f"{page.name} rendered", len(page.text) > 200, f"{len(page.text)} chars")
    _check_experiment(report, by["experiment"], by["experiment-bare"])
    _check_parent(report, by["parent-run"], ids)
    _check_trial(report, by["trial-run"], by["trial-metrics"])
    _check_model(report, by["model"], by["model-version"])


GENAI_WORDS = ("Token Usage", "Tokens per Trace", "Detect Issues")
"""Words of the GenAI overview (traces, tokens), which a training sweep has none of."""


def _check_experiment(report: Report, page: Page, bare: Page) -> None:
    genai = [w for w in GENAI_WORDS if w in page.text]
    runs = re.search(r"(\d+) matching runs", page.text)
    report.check(
        "experiment opens as model training",
        not genai and runs is not None,
        f"runs table {runs.group(0) if runs else 'absent'}; GenAI words {genai or 'none'}",
    )
    view = "GenAI overview" if any(w in bare.text for w in GENAI_WORDS) else "model training"
    print(f"info experiment's bare address in a fresh browser: {view}", flush=True)


def _check_parent(report: Report, page: Page, ids: Ids) -> None:
    shown = ["Champion", ids.champion_trial, "untrained reference", "Trials, best first"]
    shown.append("Reproduce")
    missing = [w for w in shown if w not in page.text]
    report.check(
        "parent run shows the sweep summary",
        not missing,
        f"missing {missing}" if missing else f"description shows {shown}",
    )


def _check_trial(report: Report, overview: Page, metrics: Page) -> None:
    model = re.search(r"Model metrics \((\d+)\)", overview.text)
    total = re.search(r"Metrics \((\d+)\)", overview.text)
    count = int(model.group(1)) if model else -1
    charts = re.search(r"Model metrics \((\d+)\)", metrics.text)
    report.check(
        f"trial shows at most {MAX_METRICS} metrics",
        0 < count <= MAX_METRICS and charts is not None and int(charts.group(1)) == count,
        f"{count} model metrics ({total.group(1) if total else '?'} with system metrics), "
        f"{charts.group(1) if charts else '?'} on the charts tab",
    )
    report.check(
        "trial describes its detector",
        "untrained reference" in overview.text and "detector" in overview.text,
        "description: detector beside the untrained reference",
    )


def _check_model(report: Report, model: Page, version: Page) -> None:
    about = "anomalous machine-sound detection"
    report.check("registered model has a description", about in model.text, about)
    report.check(
        "model version has a description and its logged model",
        "untrained reference" in version.text and "Source Model" in version.text,
        f"description {'untrained reference' in version.text}, "
        f"Source Model link {'Source Model' in version.text}",
    )


if __name__ == "__main__":
    sys.exit(main())
