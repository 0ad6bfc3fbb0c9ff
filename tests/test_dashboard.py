"""The web dashboard end to end: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against a real syncmq with a users file, while pika
clients make the traffic.

Every wait is an explicit wait on a page condition (WebDriverWait), never a sleep. The page
refreshes every 2 s here (its refresh selector), so a change shows within a few seconds.
Screenshots of the overview and of a queue page are saved in ``$SYNCMQ_ARTEFACTS`` (default
``tests/artefacts/``); the README's come from there.

Skipped only outside CI when chromium, chromedriver or selenium is missing; in CI (``CI``
set) a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import threading

import pytest
from amqp_helpers import TIMEOUT
from brokerproc import start_broker
from test_management import call, get

from syncmq.broker.auth import hash_password

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - only outside CI
    HAVE_SELENIUM = False

_missing = [what for what, ok in (("selenium", HAVE_SELENIUM),
                                  ("chromium", os.path.exists(CHROMIUM)),
                                  ("chromedriver", os.path.exists(CHROMEDRIVER))) if not ok]
if _missing and not os.environ.get("CI"):
    pytest.skip(f"no {', '.join(_missing)} (apt-get install chromium chromium-driver; "
                "pip install selenium)", allow_module_level=True)

ARTEFACTS = pathlib.Path(os.environ.get("SYNCMQ_ARTEFACTS")
                         or pathlib.Path(__file__).parent / "artefacts")
ADMIN = ("ops", "ops-secret")
MONITOR = ("watcher", "watch-secret")


# ---- fixtures ----

@pytest.fixture(scope="module")
def dash_broker(tmp_path_factory):
    """A broker whose users file has an administrator and a monitoring user."""
    users = tmp_path_factory.mktemp("dashboard-users") / "users.toml"
    users.write_text(
        'vhosts = ["/"]\n'
        f'[users.{ADMIN[0]}]\npassword_hash = "{hash_password(ADMIN[1])}"\n'
        'tags = ["administrator"]\n'
        f'[users.{ADMIN[0]}.permissions."/"]\nconfigure = ".*"\nwrite = ".*"\nread = ".*"\n'
        f'[users.{MONITOR[0]}]\npassword_hash = "{hash_password(MONITOR[1])}"\n'
        'tags = ["monitoring"]\n'
        f'[users.{MONITOR[0]}.permissions."/"]\nconfigure = ""\nwrite = ""\nread = ".*"\n')
    b = start_broker(tmp_path_factory, "--users-file", str(users))
    yield b
    assert b.stop() == 0, b.log_tail()
    assert not b.tracebacks(), b.log_tail(80)


@pytest.fixture(scope="module")
def driver(dash_broker):
    """One headless Chromium for the module (set up after, so closed before, the broker:
    the page stops polling before the broker stops)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(ARTEFACTS),
                                           "download.prompt_for_download": False})
    # the system driver, named explicitly: selenium-manager must not try to download one
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(TIMEOUT)
    yield d
    try:
        d.get("about:blank")
    finally:
        d.quit()


def _amqp_params(b):
    import pika
    return pika.ConnectionParameters(
        host="127.0.0.1", port=b.port, credentials=pika.PlainCredentials(*ADMIN),
        heartbeat=0, blocked_connection_timeout=TIMEOUT, socket_timeout=TIMEOUT)


def amqp(b):
    import pika
    return pika.BlockingConnection(_amqp_params(b))


def wait(d, cond, what: str, timeout: float = TIMEOUT):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(cond)
    except Exception as e:
        logs = ""
        try:
            logs = "\n".join(str(x) for x in d.get_log("browser"))
        except Exception:
            pass
        banner = d.execute_script("const b = document.getElementById('banner');"
                                  "return b && !b.hidden ? b.textContent : ''")
        raise AssertionError(f"{what}: not seen within {timeout} s (banner: {banner!r}; "
                             f"browser log: {logs})") from e


def text_of(d, css: str) -> str | None:
    """The text of the first element matching ``css``, or None (no stale-element races)."""
    return d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null", css)


def login(d, b, user: tuple[str, str]) -> None:
    d.get(f"http://127.0.0.1:{b.management_port}/")
    d.execute_script("sessionStorage.clear(); localStorage.setItem('syncmq.refresh', '2');"
                     "location.hash = '#/overview'")
    d.refresh()  # a new page: logged out, refreshing every 2 s
    wait(d, EC.visibility_of_element_located((By.ID, "login-user")), "the login form")
    d.find_element(By.ID, "login-user").send_keys(user[0])
    d.find_element(By.ID, "login-pass").send_keys(user[1])
    d.find_element(By.ID, "login-submit").click()
    wait(d, lambda d: (text_of(d, "#whoami") or "").startswith(user[0] + " "), "logged in")
    assert Select(d.find_element(By.ID, "refresh")).first_selected_option.text == "2 s"


def goto(d, hash_: str) -> None:
    d.execute_script("location.hash = arguments[0]", hash_)


def row_cell(name: str, cls: str) -> str:
    return f'#queues-grid tr[data-name="{name}"] td.{cls}'


def screenshot(d, name: str) -> pathlib.Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    d.execute_script("window.scrollTo(0, 0)")
    d.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


# ---- tests ----

def test_login_is_refused_for_bad_credentials(driver, dash_broker):
    d, b = driver, dash_broker
    d.get(f"http://127.0.0.1:{b.management_port}/")
    d.execute_script("sessionStorage.clear()")
    d.refresh()
    wait(d, EC.visibility_of_element_located((By.ID, "login-user")), "the login form")
    d.find_element(By.ID, "login-user").send_keys(ADMIN[0])
    d.find_element(By.ID, "login-pass").send_keys("wrong")
    d.find_element(By.ID, "login-submit").click()
    wait(d, lambda d: "Login refused" in (text_of(d, "#login-error") or ""), "the refusal")
    assert not d.find_element(By.ID, "nav").is_displayed()


def test_queue_appears_fills_and_is_purged(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    goto(d, "#/queues")
    filt = wait(d, EC.visibility_of_element_located((By.ID, "queues-filter")), "the filter")
    filt.send_keys(unique)
    wait(d, lambda d: "No queues" in (text_of(d, "#queues-table") or ""), "an empty list")
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.queue_declare(unique, durable=True)
        # the queue shows up on its own (the page refreshes), with nothing in it
        wait(d, lambda d: text_of(d, row_cell(unique, "ready")) == "0", "the new queue")
        for i in range(3):
            ch.basic_publish("", unique, f"message {i}".encode())
        wait(d, lambda d: text_of(d, row_cell(unique, "ready")) == "3", "ready = 3")
        # click through to the queue
        # the table is rebuilt on every refresh: click the link that is there now
        d.execute_script("document.querySelector(arguments[0]).click()",
                         f'#queues-grid tr[data-name="{unique}"] a')
        wait(d, lambda d: text_of(d, "#queue-name") == unique, "the queue page")
        wait(d, lambda d: text_of(d, "#tile-ready .v") == "3", "the queue's ready tile")
        # look at two messages without taking them
        count = d.find_element(By.ID, "get-count")
        count.clear()
        count.send_keys("2")
        d.find_element(By.ID, "get-submit").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#get-results .message")) == 2,
             "two messages shown")
        payloads = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#get-results pre")]
        assert payloads == ["message 0", "message 1"]
        assert get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)["messages_ready"] == 3
        wait(d, lambda d: text_of(d, "#tile-ready .v") == "3", "still 3 after the look")
        cch = conn.channel()
        cch.basic_consume(unique, lambda *a: None, consumer_tag="dash-consumer")
        conn.process_data_events(0)
        wait(d, lambda d: "dash-consumer" in (text_of(d, "#queue-consumers") or ""),
             "the consumer listed")
        cch.close()  # its unacked messages go back to the queue
        # wait until the consumer's messages are back, then purge through the page
        wait(d, lambda d: text_of(d, "#tile-ready .v") == "3"
             and text_of(d, "#tile-consumers .v") == "0", "consumer gone, 3 ready")
        screenshot(d, "queue.png")
        d.find_element(By.CSS_SELECTOR, "#purge button[data-write]").click()
        d.find_element(By.CSS_SELECTOR, "#purge button[data-confirm]").click()
        wait(d, lambda d: "purged" in (text_of(d, "#banner") or ""), "the purge confirmed")
        wait(d, lambda d: text_of(d, "#tile-ready .v") == "0", "ready = 0 after the purge")
        assert ch.queue_declare(unique, passive=True).method.message_count == 0


def test_overview_charts_live_rates(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    wait(d, lambda d: text_of(d, "#tile-queues .v") is not None, "the overview tiles")
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:  # publish and consume until told to stop, ~200 msg/s
        try:
            with connection_as_admin(b) as conn:
                ch = conn.channel()
                ch.queue_declare(unique, auto_delete=True)
                ch.basic_qos(prefetch_count=50)
                ch.basic_consume(unique, lambda c, m, p, body: c.basic_ack(m.delivery_tag))
                while not stop.is_set():
                    for _ in range(10):
                        ch.basic_publish("", unique, b"tick")
                    conn.sleep(0.05)  # pacing (pika serves the consumer meanwhile)
        except BaseException as e:  # reported by the test
            errors.append(e)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        def live(d) -> bool:
            vals = [text_of(d, f'#chart-rates + .legend [data-series="{k}"]')
                    for k in ("publish", "deliver", "ack")]
            samples = d.execute_script("return document.querySelectorAll('#tile-publish').length")
            return samples == 1 and all(v and v != "0.0/s" for v in vals)
        wait(d, live, "non-zero publish, deliver and ack rates")
        # a couple more samples so the chart shows a line, then the screenshot
        n0 = d.execute_script("return performance.now()")
        wait(d, lambda d: d.execute_script("return performance.now()") - n0 > 4000
             and text_of(d, '#chart-rates + .legend [data-series="publish"]') != "0.0/s",
             "more samples")
        assert int(text_of(d, "#tile-connections .v").replace(",", "")) >= 1
        assert text_of(d, "#tile-alarms .v") == "none"
        assert text_of(d, "#tile-journal .v").endswith("B")
        assert text_of(d, "#tile-uptime .v")
        screenshot(d, "overview.png")
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not errors, errors


def test_monitoring_user_sees_but_cannot_purge(driver, dash_broker, unique):
    d, b = driver, dash_broker
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.queue_declare(unique)
        for _ in range(2):
            ch.basic_publish("", unique, b"keep me")
        ch.queue_declare(unique, passive=True)
    login(d, b, MONITOR)
    assert "monitoring" in text_of(d, "#whoami")
    # the admin-only pages are not offered, and refuse when opened directly
    assert not d.find_element(By.CSS_SELECTOR, 'a[data-page="admin"]').is_displayed()
    goto(d, "#/admin")
    wait(d, EC.visibility_of_element_located((By.ID, "admin-only")), "the admin-only note")
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "2", "the queue, read-only")
    assert "Read-only" in text_of(d, "#readonly-note")
    purge = d.find_element(By.CSS_SELECTOR, "#purge button[data-write]")
    assert not purge.is_enabled()
    assert not d.find_element(By.ID, "get-submit").is_enabled()
    # a stale or tampered page that still sends a delete: the broker refuses it (acting as
    # the user, as RabbitMQ: configure "" on "/"), the page says so, and nothing is deleted
    delete = d.find_element(By.CSS_SELECTOR, "#delete-queue button[data-write]")
    d.execute_script("arguments[0].disabled = false", delete)
    delete.click()
    d.find_element(By.CSS_SELECTOR, "#delete-queue button[data-confirm]").click()
    wait(d, lambda d: "Access refused" in (text_of(d, "#banner") or ""), "the refusal")
    assert "administrator" in text_of(d, "#banner")
    assert get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)["messages_ready"] == 2
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "2", "still 2 after the refusal")


def test_publish_form_and_connection_close(driver, dash_broker, unique):
    import pika
    import pika.exceptions
    d, b = driver, dash_broker
    x, q = f"{unique}-x", f"{unique}-q"
    params = _amqp_params(b)
    params.client_properties = {"connection_name": f"client-{unique}"}
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.exchange_declare(x, "direct")
        ch.queue_declare(q)
        ch.queue_bind(q, x, "to-q")
        login(d, b, ADMIN)
        goto(d, f"#/exchange/%2F/{x}")
        wait(d, lambda d: q in (text_of(d, "#exchange-bindings") or ""), "the binding")
        d.find_element(By.ID, "publish-routing-key").send_keys("to-q")
        d.find_element(By.ID, "publish-headers").send_keys('{"origin": "dashboard"}')
        d.find_element(By.ID, "publish-payload").send_keys("from the page")
        d.find_element(By.ID, "publish-submit").click()
        wait(d, lambda d: "published and routed" in (text_of(d, "#banner") or ""), "routed")
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"from the page" and props.headers == {"origin": "dashboard"}
        # the connection, found by its client-provided name, closed from the page
        goto(d, "#/connections")
        row = '#connections-grid tr[data-name] td:first-child div'
        wait(d, lambda d: d.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".some(e => e.textContent === arguments[1])", row, f"client-{unique}"),
            "the connection listed")
        d.execute_script(
            "const cell = [...document.querySelectorAll(arguments[0])]"
            "  .find(e => e.textContent === arguments[1]).closest('tr');"
            "cell.querySelector('button[data-write]').click();"
            "cell.querySelector('button[data-confirm]').click();", row, f"client-{unique}")
        wait(d, lambda d: "closed" in (text_of(d, "#banner") or ""), "the close confirmed")

        def closed(_d) -> bool:
            try:
                conn.process_data_events(0.05)
            except pika.exceptions.ConnectionClosedByBroker as e:
                assert e.reply_code == 320 and "dashboard" in e.reply_text
                return True
            return not conn.is_open
        wait(d, closed, "the client told 320 CONNECTION_FORCED")
    finally:
        if conn.is_open:
            conn.close()


def test_definitions_export_and_import(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    goto(d, "#/definitions")
    before = set(ARTEFACTS.glob("syncmq-definitions-*.json"))
    for f in before:
        f.unlink()
    wait(d, EC.element_to_be_clickable((By.ID, "export")), "the export button").click()
    wait(d, lambda d: "queues" in (text_of(d, "#export-summary") or ""), "the export summary")
    wait(d, lambda d: [f for f in ARTEFACTS.glob("syncmq-definitions-*.json")
                       if f.stat().st_size > 0], "the downloaded file")
    exported = json.loads(next(ARTEFACTS.glob("syncmq-definitions-*.json")).read_text())
    assert {u["name"] for u in exported["users"]} >= {ADMIN[0], MONITOR[0]}
    # import a file that adds a queue
    path = ARTEFACTS / f"import-{unique}.json"
    path.write_text(json.dumps({"queues": [{"name": unique, "vhost": "/", "durable": False,
                                            "auto_delete": False, "arguments": {}}]}))
    d.find_element(By.ID, "import-file").send_keys(str(path.resolve()))
    d.find_element(By.ID, "import-submit").click()
    wait(d, lambda d: "Definitions imported" in (text_of(d, "#banner") or ""), "imported")
    assert get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)["name"] == unique
    path.unlink()


def test_ten_thousand_queues_page(driver, dash_broker):
    d, b = driver, dash_broker
    n = 10_000
    defs = {"queues": [{"name": f"bulk-{i:05d}", "vhost": "/", "durable": False,
                        "auto_delete": False, "arguments": {}} for i in range(n)]}
    status, body, _ = call(b, "POST", "/api/definitions", defs, auth=ADMIN)
    assert status == 204, body
    login(d, b, ADMIN)
    goto(d, "#/queues")
    # the other tests' queues are there too (and an auto-delete one may still be going):
    # the page count is checked against the total the same answer reports
    def first_page(d) -> bool:
        info, summary = text_of(d, "#queues-page-info"), text_of(d, "#queues-summary")
        m = re.fullmatch(r"1–50 of ([\d,]+) queues", summary or "")
        return bool(m) and int(m[1].replace(",", "")) >= n and info == (
            f"Page 1 of {-(-int(m[1].replace(',', '')) // 50):,}")
    wait(d, first_page, "page 1 of N")
    assert len(d.find_elements(By.CSS_SELECTOR, "#queues-grid tbody tr")) == 50
    d.find_element(By.ID, "queues-next").click()
    wait(d, lambda d: (text_of(d, "#queues-page-info") or "").startswith("Page 2 of "), "page 2")
    assert (text_of(d, "#queues-summary") or "").startswith("51–100 of ")
    total = get(b, "/api/queues?page=1&page_size=1", auth=ADMIN)["total_count"]
    d.find_element(By.ID, "queues-filter").send_keys("bulk-0999")
    wait(d, lambda d: text_of(d, "#queues-page-info") == "Page 1 of 1"
         and len(d.find_elements(By.CSS_SELECTOR, "#queues-grid tbody tr")) == 10,
         "the filtered page")
    assert text_of(d, "#queues-summary") == f"1–10 of 10 queues (filtered from {total:,})"
    d.find_element(By.ID, "queues-filter").clear()
    # sort by name, descending: the last queue comes first
    d.find_element(By.ID, "queues-filter").send_keys("bulk-")
    wait(d, lambda d: (text_of(d, "#queues-summary") or "").startswith(f"1–50 of {n:,} queues")
         and text_of(d, "#queues-page-info") == "Page 1 of 200", "all bulk queues")
    # (the table is rebuilt on every refresh: click what is there now, from the page)
    click = "document.querySelector('#queues-grid th[data-sort=\"name\"]').click()"
    d.execute_script(click)  # ascending
    wait(d, lambda d: "sorted-asc" in (d.execute_script(
        "return document.querySelector('#queues-grid th[data-sort=\"name\"]').className")),
        "sorted ascending")
    d.execute_script(click)  # descending
    wait(d, lambda d: d.execute_script(
        "const r = document.querySelector('#queues-grid tbody tr');"
        "return r && r.dataset.name") == f"bulk-{n - 1:05d}", "the last queue first")


# ---- helpers ----

class connection_as_admin:  # noqa: N801 (used as a context manager, like amqp_helpers')
    def __init__(self, b) -> None:
        self.b = b

    def __enter__(self):
        self.conn = amqp(self.b)
        return self.conn

    def __exit__(self, *exc) -> None:
        if self.conn.is_open:
            try:
                self.conn.close()
            except Exception:
                pass

