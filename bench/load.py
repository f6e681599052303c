"""Load test: many concurrent visitors on one app server while a training runs (issue 12, item 5).

Each visitor is a browser-like client of Streamlit's own websocket protocol (``/_stcore/stream``,
protobuf ``BackMsg``/``ForwardMsg``, with the XSRF cookie and token a browser sends): it opens the
app, then for the test's duration switches pages, picks another query in the query pages' selectors and
uploads photos (one of 24 demo test queries at 320×240, or the same scene as a 12-megapixel
JPEG, through the real upload route: each upload a photo drawn at random from those, so that
most are new to the server), with a seeded think time between actions, and follows the sidebar's live training
fragment (auto-reruns) as a browser does. A client draws nothing, so the server's work is what is
measured: for every action, the time from the request to the script's end.

Phases, on one server started as ``make app`` starts it (``python -m viz_app.serve``), with a
figure cache of its own filled as ``make prepare`` fills it (``viz_app.warm``: each page's first
view), so the figures of the visitors' picks are drawn during the test:
1. **idle**: one visitor, nothing else running: each action's median time (its idle time);
2. **load**: a demo training started in the background exactly as the Train page starts it
   (``start_training``), then ``--sessions`` visitors for ``--minutes`` minutes.
Checks (exit status 1 if one fails): no error (exception or error box on a page, failed upload,
dropped connection); no action's median under load slower than ``--max-ratio`` (3) × its idle
time; server memory bounded: the largest resident size (the server's and its figure worker's) of
the second half of the load phase at most ``--memory-margin-mb`` above that of the first half. Server RSS is sampled every 0.5 s.

Run: ``make bench-load`` or ``.venv/bin/python bench/load.py [--sessions 20 --minutes 2]``;
``tests/test_load.py`` (marked slow) runs it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import websockets  # noqa: E402
from PIL import Image  # noqa: E402
from streamlit.proto.Alert_pb2 import Alert  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.Common_pb2 import FileUploaderState, UploadedFileInfo  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates  # noqa: E402

from bench.memory import tree_rss_mb  # noqa: E402
from tests.browser import app_process  # noqa: E402

QUERY_PAGES = ("retrieval", "heatmaps", "soft_labels", "map")  # pages with a query selector
PAGES = ("", *QUERY_PAGES, "upload", "train")  # url paths ("" is the Overview)
XSRF_COOKIE = "_streamlit_xsrf"
UNFINISHED = ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN


class LoadError(RuntimeError):
    """A visitor saw an error: an exception or error box, a failed upload, a dropped connection."""


class NoAnswer(LoadError):
    """The server did not finish a script run in time; the visitor's session is then abandoned."""


ANSWER_TIMEOUT_S = 180.0  # longest wait for a script run's end


@dataclass
class Outcome:
    """What one script run sent back: its duration, error texts and the widgets it drew."""

    seconds: float
    errors: list[str] = field(default_factory=list)
    widgets: dict[tuple[str, str], str] = field(default_factory=dict)  # (element type, label) -> widget id
    options: dict[str, list[str]] = field(default_factory=dict)  # selectbox id -> its options, as shown
    texts: list[str] = field(default_factory=list)  # markdown bodies and metric labels, in order


class Visitor:
    """One browser-like session over Streamlit's websocket protocol."""

    def __init__(self, url: str):
        self.url = url
        self.session_id = ""
        self.pages: dict[str, str] = {}  # url path -> page script hash
        self.page = ""
        self.fragments: dict[str, float] = {}  # live fragment id -> interval (s)
        self._ws = None
        self._lock = asyncio.Lock()  # one script run at a time, as a browser tab
        self._headers: dict[str, str] = {}
        self._token = ""

    async def connect(self) -> None:
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        # as the browser: the health check sets the XSRF cookie that the websocket and uploads present
        await asyncio.to_thread(lambda: opener.open(self.url + "/_stcore/health", timeout=60).read())
        self._token = next((c.value for c in jar if c.name == XSRF_COOKIE), "")
        self._headers = {"Origin": self.url}
        if self._token:
            self._headers["Cookie"] = f"{XSRF_COOKIE}={self._token}"
        ws_url = self.url.replace("http", "ws", 1) + "/_stcore/stream"
        protocols = ["streamlit", self._token] if self._token else ["streamlit"]
        self._ws = await websockets.connect(ws_url, subprotocols=protocols, additional_headers=self._headers,
                                            max_size=None, open_timeout=60, ping_interval=None)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _send(self, msg: BackMsg) -> None:
        await self._ws.send(msg.SerializeToString())

    async def _receive(self, deadline: float) -> ForwardMsg:
        """The next message; :class:`NoAnswer` when none comes before ``deadline`` (perf_counter)."""
        try:
            data = await asyncio.wait_for(self._ws.recv(), max(0.0, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            raise NoAnswer(f"no answer from the server within {ANSWER_TIMEOUT_S:.0f} s") from None
        msg = ForwardMsg()
        msg.ParseFromString(data)
        return msg

    async def run(self, page: str | None = None, widgets: list[WidgetState] = (), fragment_id: str = "") -> Outcome:
        """Rerun the script (on ``page``, a url path, if given) with ``widgets``; wait for its end."""
        async with self._lock:
            if fragment_id and fragment_id not in self.fragments:  # a full run since replaced it
                return Outcome(0.0)
            if page is not None:
                self.page = page
            if not fragment_id:
                self.fragments.clear()  # a full run registers the page's live fragments again
            state = BackMsg()
            state.rerun_script.query_string = ""
            state.rerun_script.page_name = self.page
            if self.page in self.pages:
                state.rerun_script.page_script_hash = self.pages[self.page]
            state.rerun_script.widget_states.CopyFrom(WidgetStates(widgets=list(widgets)))
            if fragment_id:
                state.rerun_script.fragment_id = fragment_id
                state.rerun_script.is_auto_rerun = True
            t0 = time.perf_counter()
            await self._send(state)
            out = Outcome(0.0)
            while True:
                msg = await self._receive(t0 + ANSWER_TIMEOUT_S)
                kind = msg.WhichOneof("type")
                if kind == "new_session":
                    if msg.new_session.initialize.session_id:
                        self.session_id = msg.new_session.initialize.session_id
                    self._learn_pages(msg.new_session.app_pages)
                elif kind == "navigation":
                    self._learn_pages(msg.navigation.app_pages)
                elif kind == "auto_rerun":
                    self.fragments[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
                elif kind == "stop_auto_rerun":
                    self.fragments.pop(msg.stop_auto_rerun.fragment_id, None)
                elif kind == "delta":
                    _read_delta(msg, out)
                elif kind == "script_finished" and msg.script_finished != UNFINISHED:
                    out.seconds = time.perf_counter() - t0
                    return out

    def _learn_pages(self, app_pages) -> None:
        for p in app_pages:
            self.pages[p.url_pathname] = p.page_script_hash

    async def upload(self, uploader_id: str, data: bytes, name: str) -> Outcome:
        """Upload ``data`` through the upload route, then rerun with it in the file uploader."""
        async with self._lock:
            t0 = time.perf_counter()
            req = BackMsg()
            req.file_urls_request.request_id = uuid.uuid4().hex
            req.file_urls_request.file_names.append(name)
            req.file_urls_request.session_id = self.session_id
            await self._send(req)
            while True:
                msg = await self._receive(t0 + ANSWER_TIMEOUT_S)
                if msg.WhichOneof("type") == "file_urls_response":
                    break
            if msg.file_urls_response.error_msg:
                raise LoadError(f"upload refused: {msg.file_urls_response.error_msg}")
            urls = msg.file_urls_response.file_urls[0]
            await asyncio.to_thread(self._put, urls.upload_url, data, name)
            upload_s = time.perf_counter() - t0
        info = UploadedFileInfo(file_id=urls.file_id, name=name, size=len(data), file_urls=urls)
        state = WidgetState(id=uploader_id, file_uploader_state_value=FileUploaderState(uploaded_file_info=[info]))
        out = await self.run(widgets=[state])
        out.seconds += upload_s
        return out

    def _put(self, upload_url: str, data: bytes, name: str) -> None:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        url = upload_url if upload_url.startswith("http") else self.url + "/" + upload_url.lstrip("/")
        headers = {**self._headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        if self._token:
            headers["X-Xsrftoken"] = self._token
        req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        with urllib.request.urlopen(req, timeout=120) as resp:
            if resp.status not in (200, 204):
                raise LoadError(f"upload of {name} answered {resp.status}")


def _read_delta(msg: ForwardMsg, out: Outcome) -> None:
    if msg.delta.WhichOneof("type") != "new_element":
        return
    el = msg.delta.new_element
    kind = el.WhichOneof("type")
    if kind == "exception":
        where = " <- ".join(line.strip() for line in list(el.exception.stack_trace)[-3:])
        out.errors.append(f"{el.exception.type}: {el.exception.message}"[:300] + (f" at {where[:600]}" if where else ""))
    elif kind == "alert" and el.alert.format == Alert.ERROR:
        out.errors.append(el.alert.body[:300])
    elif kind == "markdown":
        out.texts.append(el.markdown.body)
    elif kind == "metric":
        out.texts.append(el.metric.label)
    elif kind in ("button", "file_uploader", "selectbox"):
        widget = getattr(el, kind)
        out.widgets[(kind, widget.label)] = widget.id
        if kind == "selectbox":
            out.options[widget.id] = list(widget.options)


# --- the visitors' behaviour -------------------------------------------------------------------

@dataclass
class Record:
    """One timed action of one visitor."""

    action: str
    seconds: float
    at: float  # time.time() at its end
    errors: list[str]


DEMO_DATA = ROOT / "data" / "synthcity"
DEMO_RUNS = ROOT / "assets" / "demo"


PHOTO_POOL = 24  # distinct photos of each size: uploads are new photos, not cache hits of the last one


def photos(data: Path = DEMO_DATA, count: int = PHOTO_POOL) -> dict[str, list[bytes]]:
    """``count`` test queries of the dataset as rendered (320×240 for the demo), and the same
    scenes as 12 MP JPEGs: {"small.jpg": [...], "12mp.jpg": [...]}, each a different photo."""
    from sfrs_core.data import load_dataset

    queries = load_dataset(data)["test"].queries
    picks = np.linspace(0, len(queries) - 1, min(count, len(queries))).astype(int)
    small, large = [], []
    for q in picks:
        path = queries.image_path(int(q))
        small.append(Path(path).read_bytes())
        buf = io.BytesIO()
        Image.open(path).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(buf, "JPEG", quality=92)
        large.append(buf.getvalue())
    return {"small.jpg": small, "12mp.jpg": large}


async def act(visitor: Visitor, action: str, pics: dict[str, list[bytes]], rng: random.Random) -> Outcome:
    """Do one action: ``page:<path>`` (open a page), ``pick:<path>`` (open it and choose another
    query in its query selector) or ``upload:<kind>`` (open the Upload page and upload one of the
    photos of that kind, drawn at random)."""
    what, arg = action.split(":", 1)
    if what == "page":
        return await visitor.run(page=arg)
    if what == "pick":
        out = await visitor.run(page=arg)
        picker = next((i for (k, label), i in out.widgets.items()
                       if k == "selectbox" and label.startswith("Query") and out.options.get(i)), None)
        if picker is None:
            raise LoadError(f"no query selector on /{arg}")
        choice = rng.choice(out.options[picker])
        pick = await visitor.run(widgets=[WidgetState(id=picker, string_value=choice)])
        pick.errors = out.errors + pick.errors
        return pick
    out = await visitor.run(page="upload")
    uploader = next((i for (k, _), i in out.widgets.items() if k == "file_uploader"), None)
    if uploader is None:
        raise LoadError("no file uploader on /upload")
    up = await visitor.upload(uploader, rng.choice(pics[arg]), arg)
    up.errors = out.errors + up.errors
    return up


ACTIONS = ([f"page:{p}" for p in PAGES] + [f"pick:{p}" for p in QUERY_PAGES] + ["upload:small.jpg", "upload:12mp.jpg"])


async def follow_fragments(visitor: Visitor, records: list[Record], stop: asyncio.Event) -> None:
    """Rerun the page's live fragments at their intervals, as the browser does (the sidebar's
    training monitor while a training runs)."""
    due: dict[str, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        for fid, interval in list(visitor.fragments.items()):
            if now >= due.setdefault(fid, now + interval):
                try:
                    out = await visitor.run(fragment_id=fid)
                except (LoadError, OSError, websockets.ConnectionClosed) as err:
                    records.append(Record("fragment", float("nan"), time.time(), [f"{type(err).__name__}: {err}"]))
                    return
                if out.seconds:
                    records.append(Record("fragment", out.seconds, time.time(), out.errors))
                due[fid] = time.monotonic() + interval
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def visitor_loop(url: str, seed: int, until: float, think: tuple[float, float], pics: dict[str, list[bytes]],
                       records: list[Record]) -> None:
    rng = random.Random(seed)
    v = Visitor(url)
    await v.connect()
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_fragments(v, records, stop))
    try:
        await asyncio.sleep(rng.uniform(0, think[1]))  # visitors arrive spread out
        while time.time() < until:
            action = rng.choice(ACTIONS)
            try:
                out = await act(v, action, pics, rng)
                records.append(Record(action, out.seconds, time.time(), out.errors))
            except (LoadError, OSError, websockets.ConnectionClosed) as err:
                records.append(Record(action, float("nan"), time.time(), [f"{type(err).__name__}: {err}"]))
                if isinstance(err, (websockets.ConnectionClosed, NoAnswer)):
                    return
            await asyncio.sleep(rng.uniform(*think))
    finally:
        stop.set()
        await follower
        await v.close()


async def idle_times(url: str, pics: dict[str, list[bytes]], repeats: int) -> dict[str, list[float]]:
    """Each action ``repeats`` times by a single visitor (the first visit warms the caches and is
    not counted: every later visitor of the load phase finds them warm too)."""
    v = Visitor(url)
    await v.connect()
    rng = random.Random(0)
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for action in ACTIONS:
            await act(v, action, pics, rng)
        for _ in range(repeats):
            for action in ACTIONS:
                out = await act(v, action, pics, rng)
                if out.errors:
                    raise LoadError(f"{action} when idle: {out.errors}")
                times[action].append(out.seconds)
    finally:
        await v.close()
    return times


# --- the server, its memory and the training ----------------------------------------------------

def app_server(env: dict[str, str]):
    """The app as ``make app`` starts it (``viz_app.serve``), on a free port of 127.0.0.1: a context
    manager yielding (base URL, server process)."""
    return app_process(env, timeout_s=180.0, preload=True)


class MemorySampler(threading.Thread):
    """Samples the resident memory of a process and its children (the server and its figure
    worker) every ``period`` seconds: ``samples`` of (time, MB)."""

    def __init__(self, pid: int, period: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), tree_rss_mb(self.pid)))
            self.halt.wait(self.period)


# --- report ---------------------------------------------------------------------------------------

@dataclass
class Report:
    idle: dict[str, float]
    load: dict[str, tuple[float, float, int]]  # action -> (median, p95, count)
    errors: list[str]
    memory: tuple[float, float, float]  # RSS before the load, max of the first half, max of the second half
    training: str
    failures: list[str]

    def table(self, max_ratio: float) -> str:
        lines = [f"{'action':24s} {'idle s':>7s} {'load median':>11s} {'p95':>6s} {'ratio':>6s} {'n':>4s}"]
        for action, (med, p95, n) in sorted(self.load.items()):
            idle = self.idle.get(action)
            ratio = f"{med / idle:5.2f}x" if idle else "    —"
            lines.append(f"{action:24s} {idle if idle else float('nan'):7.2f} {med:11.2f} {p95:6.2f} {ratio:>6s} {n:4d}")
        before, first, second = self.memory
        lines.append(f"server RSS: {before:.0f} MB before the load; max {first:.0f} MB in the first half, "
                     f"{second:.0f} MB in the second ({second - first:+.0f} MB)")
        lines.append(f"training: {self.training}")
        lines.append(f"errors: {len(self.errors)}" + "".join(f"\n  {e}" for e in self.errors[:10]))
        lines.append("PASS" if not self.failures else "FAIL:\n  " + "\n  ".join(self.failures))
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


THINK_S = (5.0, 15.0)  # a visitor looks at a page for 5-15 s before the next click


def run_load_test(sessions: int = 20, minutes: float = 2.0, think: tuple[float, float] = THINK_S,
                  max_ratio: float = 3.0, memory_margin_mb: float = 150.0, repeats: int = 3, train: bool = True,
                  seed: int = 0, runs: Path = DEMO_RUNS, data: Path = DEMO_DATA, preset: str = "demo") -> Report:
    """Run both phases on a fresh server showing the runs of ``runs`` (trained on ``data``), with a
    ``preset`` training on ``data`` in the background; returns the report (``failures`` empty when
    all checks hold)."""
    from sfrs_core.training.background import job_status, start_training, stop_training, wait_for

    import subprocess

    pics = photos(data)
    with tempfile.TemporaryDirectory(prefix="sfrs-load-") as tmp:
        # a figure cache of its own, filled as `make prepare` fills it (each page's first view):
        # the figures of the visitors' picks are drawn during the test, not found from an earlier run
        env = {"SFRS_STUDIO_RUN_DIRS": os.pathsep.join([str(runs), tmp]), "SFRS_STUDIO_CACHE": str(Path(tmp) / "cache")}
        subprocess.run([sys.executable, "-m", "viz_app.warm"], cwd=ROOT, env={**os.environ, **env}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with app_server(env) as (url, proc):
            idle = {a: statistics.median(t) for a, t in asyncio.run(idle_times(url, pics, repeats)).items()}
            before = tree_rss_mb(proc.pid)
            if train:
                start_training(tmp, "load", ["--preset", preset, "--data", str(data)])
            sampler = MemorySampler(proc.pid)
            sampler.start()
            records: list[Record] = []
            t0 = time.time()
            until = t0 + minutes * 60

            async def everyone() -> None:
                await asyncio.gather(*(visitor_loop(url, seed * 1000 + i, until, think, pics, records)
                                       for i in range(sessions)))
            try:
                asyncio.run(everyone())
            finally:
                sampler.halt.set()
                sampler.join()
                status = job_status(Path(tmp) / "load") if train else None
                if train:
                    stop_training(Path(tmp) / "load", force=True)
                    wait_for(Path(tmp) / "load", ("interrupted", "stopped", "finished", "failed"), timeout=30)
            alive = proc.poll() is None
    mid = t0 + (until - t0) / 2
    first = max((mb for t, mb in sampler.samples if t < mid), default=float("nan"))
    second = max((mb for t, mb in sampler.samples if t >= mid), default=float("nan"))
    by_action: dict[str, list[float]] = defaultdict(list)
    errors = []
    for r in records:
        if r.errors:
            errors += [f"{r.action}: {e}" for e in r.errors]
        elif r.seconds == r.seconds:  # not NaN
            by_action[r.action].append(r.seconds)
    load = {a: (statistics.median(t), percentile(t, 0.95), len(t)) for a, t in by_action.items()}
    failures = []
    if errors:
        failures.append(f"{len(errors)} error(s)")
    if not alive:
        failures.append("the server died")
    for action, (med, _, _) in load.items():
        if action in idle and med > max_ratio * idle[action]:
            failures.append(f"{action}: median {med:.2f} s under load > {max_ratio:g} × idle {idle[action]:.2f} s")
    missing = set(ACTIONS) - set(load)
    if missing:
        failures.append(f"actions never completed under load: {sorted(missing)}")
    if second - first > memory_margin_mb:
        failures.append(f"server memory grew {second - first:.0f} MB from the first half to the second "
                        f"(margin {memory_margin_mb:g} MB)")
    training = "not run" if status is None else (
        f"{status.state}, {status.fraction:.0%} done after {minutes:g} min" if status.state else "unknown")
    if train and status is not None and status.state in (None, "failed"):
        failures.append(f"the background training did not run: {status.state}")
    return Report(idle, load, errors, (before, first, second), training, failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="concurrent visitors (default 20)")
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the load phase (default 2)")
    parser.add_argument("--think", type=float, nargs=2, default=THINK_S, metavar=("MIN", "MAX"),
                        help="seconds a visitor looks at a page before the next action (uniform; default 5 15)")
    parser.add_argument("--max-ratio", type=float, default=3.0, help="allowed load/idle ratio of each action's median")
    parser.add_argument("--memory-margin-mb", type=float, default=150.0,
                        help="allowed growth of the server's peak RSS from the first half of the load to the second")
    parser.add_argument("--no-training", action="store_true", help="no background training during the load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}; {args.sessions} visitors for {args.minutes:g} min, think time "
          f"{args.think[0]:g}-{args.think[1]:g} s, training in the background: {not args.no_training}", flush=True)
    report = run_load_test(args.sessions, args.minutes, tuple(args.think), args.max_ratio, args.memory_margin_mb,
                           train=not args.no_training, seed=args.seed)
    print(report.table(args.max_ratio))
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=1, default=str))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
