"""The served app as a visitor and a neighbour meet it: a real ``python -m viz_app.serve`` process.

* ``make app``'s command line listens on loopback only, answers only to loopback host names (HTTP
  and WebSocket), and ``--expose`` in full mode without a token refuses to start;
* in Chromium, a viewer-mode server shows a training started from the command line, live, with no
  button or path input that acts; a full-mode server answers a typed path outside its data roots
  with the one fixed message and refuses a run name that climbs out of the training folder.
"""
from __future__ import annotations

import contextlib
import ipaddress
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
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, ERRORS, ROOT, app_process, free_port, wait_rendered
from sfrs_core.training.background import RUN_NAME_RULE
from viz_app.access import OUTSIDE_ROOTS, TOKEN_ENV

EXCEPTION = "[data-testid=stException]"
ACTING_BUTTONS = ("Start training", "Stop", "Force stop", "Resume", "Render SynthCity")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


# ---------------------------------------------------------------------------- helpers


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without the studio's access settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SFRS_STUDIO_MODE", TOKEN_ENV, "SFRS_STUDIO_ALLOWED_HOSTS", "SFRS_STUDIO_DATA_ROOTS",
                        "SFRS_STUDIO_RUN_DIRS")}
    env.update(extra)
    return env


@contextlib.contextmanager
def make_app_server(env: dict[str, str], timeout_s: float = 120.0) -> Iterator[tuple[int, subprocess.Popen]]:
    """The server as ``make app`` starts it (``viz_app.serve``, no ``--server.address``), on a free port."""
    with app_process(env, timeout_s, preload=True, address=None) as (url, proc):
        yield int(url.rsplit(":", 1)[1]), proc


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    candidates: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # UDP: nothing is sent, the kernel only picks a source address
        candidates.append(s.getsockname()[0])
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=5).stdout
        candidates += re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    with contextlib.suppress(OSError):
        candidates += [i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    for address in candidates:
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local):
            return address
    return None


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on TCP ``port`` (``ss -ltn``, else /proc/net/tcp*)."""
    ss = shutil.which("ss")
    if ss:
        out = subprocess.run([ss, "-ltnH"], capture_output=True, text=True, timeout=10).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                local = fields[3]
                address, _, p = local.rpartition(":")
                if p == str(port):
                    found.append(address.strip("[]"))
        return found
    found = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                hex_address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(hex_address)
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(raw)))
    return found


def http_status(port: int, host_header: str, path: str = "/") -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host_header})
        return conn.getresponse().status
    finally:
        conn.close()


def websocket_status_line(port: int, host_header: str) -> str:
    """The status line the server answers a WebSocket upgrade of ``/_stcore/stream`` with."""
    request = ("GET /_stcore/stream HTTP/1.1\r\n"
               f"Host: {host_header}\r\n"
               "Upgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n"
               "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        data = b""
        with contextlib.suppress(socket.timeout):
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc`` (started in its own session) and everything it started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (the leader is gone)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------- the process


def test_make_app_listens_on_loopback_and_answers_only_loopback_host_names(tiny_runs):
    with make_app_server(_env(SFRS_STUDIO_RUN_DIRS=str(tiny_runs))) as (port, _):
        # (a) the page, on loopback
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.status == 200

        # bound to 127.0.0.1 only: not 0.0.0.0, not ::, not the machine's own address
        bound = listening_addresses(port)
        assert bound and set(bound) == {"127.0.0.1"}, bound

        # (c) the DNS-rebinding guard on plain HTTP: a foreign Host is refused, a loopback one served
        assert http_status(port, "evil.example") == 403
        assert http_status(port, f"evil.example:{port}") == 403
        assert http_status(port, f"localhost:{port}") == 200
        assert http_status(port, f"127.0.0.1:{port}") == 200

        # (d) ... and on the WebSocket: no handshake for a foreign Host; a loopback Host gets one
        refused = websocket_status_line(port, "evil.example")
        assert refused.startswith("HTTP/1.1 ") and " 101 " not in refused + " ", refused
        accepted = websocket_status_line(port, f"localhost:{port}")
        assert " 101 " in accepted + " ", accepted

        # (b) the machine's other address: nothing listens there
        address = non_loopback_ipv4()
        if address is None:
            pytest.skip("this machine has no non-loopback IPv4 address to try the port on")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((address, port), timeout=5):
            pass


def test_expose_in_full_mode_without_a_token_refuses_to_start():
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "viz_app.serve", "--expose", "--server.headless", "true",
                           "--server.port", str(port)],
                          cwd=ROOT, env=_env(SFRS_STUDIO_MODE="full"), capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - t0
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert seconds < 15, f"took {seconds:.1f} s to refuse"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and TOKEN_ENV in lines[0], proc.stderr
    assert proc.stdout.strip() == "", proc.stdout
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


# ---------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def _text(locator) -> str:
    return " ".join(locator.inner_text().split())


def _button_texts(page) -> list[str]:
    return [" ".join(b.inner_text().split()) for b in page.locator("button").all()]


def _acting_buttons(page) -> list[str]:
    return [t for t in _button_texts(page)
            if any(t == label or t.startswith(label) for label in ACTING_BUTTONS)]


def _text_inputs(page) -> list[str]:
    """The labels of the page's text inputs (main area and sidebar, expanders included)."""
    return [" ".join(w.locator("label").first.inner_text().split()) if w.locator("label").count() else ""
            for w in page.locator("[data-testid=stTextInput]").all()]


def test_viewer_mode_shows_a_cli_training_live_without_any_control(browser, tiny_city, tmp_path):
    runs_folder = tmp_path / "runs"
    runs_folder.mkdir()
    env = {"SFRS_STUDIO_RUN_DIRS": str(runs_folder), "SFRS_STUDIO_MODE": "viewer"}
    cli = None
    try:
        with app_process(env, preload=True) as (url, _):
            cli = subprocess.Popen([sys.executable, "-m", "sfrs_core", "train", "--preset", "tiny",
                                    "--data", str(tiny_city), "--run", "cli-run", "--runs-dir", str(runs_folder),
                                    "--generations", "1", "--quiet"],
                                   cwd=ROOT, env=_env(), start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                main = page.locator("[data-testid=stMain]")
                deadline = time.time() + 90
                while True:  # the run shows once the trainer has written its config
                    page.goto(f"{url}/train")
                    wait_rendered(page)
                    if "cli-run" in _text(main) and page.locator("[data-testid=stProgress]").count():
                        break
                    assert cli.poll() is None or cli.returncode == 0, f"the CLI training exited with {cli.returncode}"
                    assert time.time() < deadline, f"cli-run never showed on the Train page: {_text(main)[:1500]}"
                    page.wait_for_timeout(1500)
                first = _text(main)
                assert re.search(r"preparing|training|generation|starting|finished", first), first[:1500]
                assert page.locator(EXCEPTION).count() == 0, [e.inner_text()[:500] for e in page.locator(EXCEPTION).all()]
                assert page.locator(ERRORS).count() == 0, [e.inner_text()[:500] for e in page.locator(ERRORS).all()]
                assert not _acting_buttons(page), _button_texts(page)
                assert "Dataset path" not in _text_inputs(page), _text_inputs(page)
                assert page.get_by_label("Dataset path").count() == 0
                assert page.locator("[data-testid=stForm]").count() == 0
                assert "Viewer mode" in _text(page.locator("[data-testid=stSidebar]"))

                # live: while it trains, the monitor redraws itself (no reload) as the run moves on
                if "State: finished" not in first:
                    deadline = time.time() + 30
                    while _text(main) == first:
                        assert time.time() < deadline, f"the monitor did not move in 30 s: {first[:1500]}"
                        page.wait_for_timeout(500)
                # and a reload a few seconds later still shows the run, with its progress
                page.wait_for_timeout(3000)
                page.reload()
                wait_rendered(page)
                page.locator("[data-testid=stMain]").get_by_text("cli-run").first.wait_for(timeout=30_000)
                second = _text(main)
                assert "cli-run" in second and page.locator("[data-testid=stProgress]").count(), second[:1500]
                assert page.locator(EXCEPTION).count() == 0
                assert not _acting_buttons(page), _button_texts(page)
                assert "Dataset path" not in _text_inputs(page), _text_inputs(page)
            finally:
                page.close()
    finally:
        if cli is not None:
            _kill_group(cli)
            assert not _group_alive(cli.pid), "the CLI training left a process behind"


def test_full_mode_refuses_a_path_outside_the_data_roots_and_a_climbing_run_name(browser, tmp_path):
    runs_folder = tmp_path / "runs"  # not even created: the app creates it on a first start
    roots = tmp_path / "data-root"
    roots.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {"SFRS_STUDIO_RUN_DIRS": str(runs_folder), "SFRS_STUDIO_DATA_ROOTS": str(roots)}
    with app_process(env, preload=True) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/train")
            wait_rendered(page)
            main = page.locator("[data-testid=stMain]")

            # the Dataset selectbox (a combo box): open it, choose "Another path…"
            box = main.get_by_role("combobox", name="Dataset", exact=True)
            assert box.count() == 1, _text(main)[:1500]
            box.click()
            page.get_by_role("option", name="Another path…", exact=True).click()
            wait_rendered(page)
            assert box.input_value() == "Another path…"

            path_input = main.get_by_role("textbox", name="Dataset path", exact=True)
            path_input.fill("/etc")
            path_input.press("Enter")
            alerts = main.locator("[data-testid=stAlertContentError]")
            alerts.first.wait_for(timeout=60_000)
            wait_rendered(page)
            shown = [_text(a) for a in alerts.all()]
            assert " ".join(OUTSIDE_ROOTS.split()) in shown, shown
            assert "/etc" not in " ".join(shown), shown  # nothing about the path itself
            assert page.locator(EXCEPTION).count() == 0, [e.inner_text()[:500] for e in page.locator(EXCEPTION).all()]

            # a run name that climbs out of the training folder
            name = main.locator("[data-testid=stForm]").get_by_role("textbox", name="Run name", exact=True)
            name.fill("../evil")
            main.locator("[data-testid=stForm]").get_by_role("button", name="Start training").click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stAlertContentError]')]"
                ".some(e => /run name/i.test(e.innerText))", timeout=60_000)
            wait_rendered(page)
            shown = [_text(a) for a in alerts.all()]
            assert any("run name" in s.lower() and s.startswith("Not started") for s in shown), shown
            assert f"Not started: {RUN_NAME_RULE}." in shown, shown  # as written: no markdown escapes showing
            assert page.locator(EXCEPTION).count() == 0, [e.inner_text()[:500] for e in page.locator(EXCEPTION).all()]
            assert not any("Started" in _text(s) for s in main.locator("[data-testid=stAlertContentSuccess]").all())
        finally:
            page.close()
    assert not [p for p in tmp_path.rglob("*evil*")], list(tmp_path.rglob("*evil*"))
    assert not (ROOT / "evil").exists() and not (ROOT.parent / "evil").exists()
    if runs_folder.exists():
        assert not [p for p in runs_folder.iterdir() if not p.name.startswith(".")], list(runs_folder.iterdir())
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and p.parts[0] != "runs"] == [], after
