"""The dashboard's pages and forms of issue 17, end to end in headless Chromium (the
fixtures and helpers of ``test_dashboard.py``: a real syncmq with a users file, pika for
the traffic, Selenium for the page, every wait a WebDriverWait on a page condition).

- "Add a queue" with type, durability, auto-delete and typed arguments (checked through
  the API afterwards: numbers as numbers, booleans as booleans); refusals shown.
- Bind and unbind from the exchange and the queue pages.
- Publish to a queue and get it back from the queue page; the queue's charts.
- The Channels page, a channel's page and a connection's page (client properties, its
  channels, close).
- The header's virtual-host selector narrowing the list pages.
- A queue named with HTML shown as text, never run.

Screenshots go to ``$SYNCMQ_ARTEFACTS`` (``tests/artefacts/``); docs/screenshots/ has copies.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

import test_dashboard as td  # skips this module too where Chromium or Selenium is missing
from amqp_helpers import TIMEOUT
from test_dashboard import (
    ADMIN,
    MONITOR,
    By,
    Select,
    _amqp_params,
    connection_as_admin,
    goto,
    login,
    screenshot,
    text_of,
    wait,
)
from test_management import call, get

# the module's broker and browser, as test_dashboard.py's
dash_broker = td.dash_broker
driver = td.driver


def banner_has(text: str):
    return lambda d: text in (text_of(d, "#banner") or "")


def texts(d, css: str, data: str | None = None) -> list[str]:
    """The sorted texts (or ``data-*`` values) of what matches ``css``, read in one go by
    the page (a refresh may replace the rows between two WebDriver calls)."""
    return sorted(d.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => arguments[1] ? e.dataset[arguments[1]] : e.textContent)", css, data))


def line_pixels(d, canvas_id: str, rgb: tuple[int, int, int]) -> int:
    """How many pixels of ``canvas_id`` have exactly the colour ``rgb`` (a drawn series)."""
    return d.execute_script("""
        const c = document.getElementById(arguments[0]);
        if (!c || !c.width) return 0;
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4)
          if (px[i] === arguments[1] && px[i + 1] === arguments[2] && px[i + 2] === arguments[3]) n++;
        return n;""", canvas_id, *rgb)


DELIVER, ACK = (0x1E, 0x7B, 0x34), (0xA8, 0x64, 0x00)  # as style.css's colours


def shoot(d, css: str, name: str) -> None:
    """A screenshot of the card holding ``css`` (a form) into the artefacts folder."""
    path = td.ARTEFACTS / name
    td.ARTEFACTS.mkdir(parents=True, exist_ok=True)
    card = d.execute_script("return document.querySelector(arguments[0]).closest('.card')", css)
    d.execute_script("arguments[0].scrollIntoView()", card)
    card.screenshot(str(path))
    assert path.stat().st_size > 1000


def click(d, css: str) -> None:
    """Click what matches ``css`` now (tables are rebuilt on every refresh)."""
    d.execute_script("document.querySelector(arguments[0]).click()", css)


def fill_in(d, css: str, value: str) -> None:
    e = d.find_element(By.CSS_SELECTOR, css)
    e.clear()
    e.send_keys(value)


def add_arg(d, form: str, key: str, value: str | None = None, typ: str | None = None,
            link: bool = True) -> None:
    """Add one argument row: by the known-argument link (its type preset) or typed in."""
    if link:
        click(d, f'#{form} .arg-link[data-arg="{key}"]')
        row = f'#{form} .arg-row[data-key="{key}"]'
    else:
        rows = d.find_elements(By.CSS_SELECTOR, f"#{form} .arg-row")
        rows[-1].find_element(By.CSS_SELECTOR, ".arg-key").send_keys(key)
        row = f'#{form} .arg-row[data-key="{key}"]'
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, row), f"the {key} row")
    if value is not None:
        fill_in(d, row + " .arg-value", value)
    if typ is not None:
        Select(d.find_element(By.CSS_SELECTOR, row + " .arg-type")).select_by_value(typ)


# ---- "Add a queue" ----

def test_add_queue_with_type_and_typed_arguments(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    goto(d, "#/queues")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#new-queue-vhost option"), "the form")
    fill_in(d, "#new-queue-name", unique)
    Select(d.find_element(By.ID, "new-queue-durable")).select_by_value("false")
    Select(d.find_element(By.ID, "new-queue-auto-delete")).select_by_value("true")
    add_arg(d, "new-queue", "x-message-ttl", "60000")
    add_arg(d, "new-queue", "x-max-length", "1000")
    add_arg(d, "new-queue", "x-single-active-consumer")  # preset: true, boolean
    add_arg(d, "new-queue", "x-dead-letter-exchange", "dlx")
    add_arg(d, "new-queue", "x-overflow", "reject-publish")
    add_arg(d, "new-queue", "x-custom-flag", "false", "boolean", link=False)
    add_arg(d, "new-queue", "x-custom-list", "a, b", "list", link=False)
    shoot(d, "#new-queue", "add-queue.png")
    d.find_element(By.ID, "new-queue-submit").click()
    wait(d, banner_has(f"Queue '{unique}' declared"), "the queue declared")
    q = get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)
    assert (q["durable"], q["auto_delete"]) == (False, True)
    assert q["arguments"] == {
        "x-message-ttl": 60000, "x-max-length": 1000, "x-single-active-consumer": True,
        "x-dead-letter-exchange": "dlx", "x-overflow": "reject-publish",
        "x-custom-flag": False, "x-custom-list": ["a", "b"], "x-queue-type": "classic"}
    assert type(q["arguments"]["x-message-ttl"]) is int  # a number, not "60000"
    assert q["arguments"]["x-single-active-consumer"] is True  # a boolean, not "true"
    # the form is empty again, and the queue is listed with its features
    assert d.find_element(By.ID, "new-queue-name").get_attribute("value") == ""
    d.find_element(By.ID, "queues-filter").send_keys(unique)
    wait(d, lambda d: "message-ttl" in (text_of(d, f'#queues-grid tr[data-name="{unique}"]')
                                        or ""), "the new queue listed")


def test_add_queue_refusals_are_shown(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    goto(d, "#/queues")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#new-queue-vhost option"), "the form")
    fill_in(d, "#new-queue-name", unique)
    # a number that is not one: refused in the page, nothing sent
    add_arg(d, "new-queue", "x-max-priority", "ten")
    d.find_element(By.ID, "new-queue-submit").click()
    wait(d, banner_has("x-max-priority must be a number"), "the typed-value refusal")
    assert call(b, "GET", f"/api/queues/%2F/{unique}", auth=ADMIN)[0] == 404
    # a value the broker refuses: its answer is shown (RabbitMQ's 406 text)
    fill_in(d, '#new-queue .arg-row[data-key="x-max-priority"] .arg-value', "300")
    d.find_element(By.ID, "new-queue-submit").click()
    wait(d, banner_has("Declaring a queue failed"), "the broker's refusal")
    assert "x-max-priority" in text_of(d, "#banner")
    assert call(b, "GET", f"/api/queues/%2F/{unique}", auth=ADMIN)[0] == 404
    click(d, '#new-queue .arg-row[data-key="x-max-priority"] .arg-remove')
    # a stream: explained in the form, refused by the broker (syncmq serves no streams)
    Select(d.find_element(By.ID, "new-queue-type")).select_by_value("stream")
    assert not d.find_element(By.ID, "new-queue-durable").is_enabled()
    assert "does not serve streams" in text_of(d, "#new-queue-type-note")
    d.find_element(By.ID, "new-queue-submit").click()
    wait(d, banner_has("unsupported queue type 'stream'"), "the stream refusal")
    assert call(b, "GET", f"/api/queues/%2F/{unique}", auth=ADMIN)[0] == 404
    # a quorum queue: durable, served by a classic queue, its type kept in the arguments
    Select(d.find_element(By.ID, "new-queue-type")).select_by_value("quorum")
    assert "classic queue" in text_of(d, "#new-queue-type-note")
    d.find_element(By.ID, "new-queue-submit").click()
    wait(d, banner_has(f"Queue '{unique}' declared"), "the quorum queue declared")
    q = get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)
    assert q["durable"] is True and q["arguments"] == {"x-queue-type": "quorum"}


# ---- bindings ----

def _bindings(b, x: str, q: str) -> list[tuple[str, dict]]:
    got = get(b, f"/api/bindings/%2F/e/{x}/q/{q}", auth=ADMIN)
    return sorted((x["routing_key"], x["arguments"]) for x in got)


def test_bind_and_unbind_from_exchange_and_queue_pages(driver, dash_broker, unique):
    d, b = driver, dash_broker
    x, q = f"{unique}-x", f"{unique}-q"
    assert call(b, "PUT", f"/api/exchanges/%2F/{x}", {"type": "headers"}, auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/queues/%2F/{q}", {}, auth=ADMIN)[0] == 201
    login(d, b, ADMIN)
    # from the exchange's page: to the queue, with a typed argument
    goto(d, f"#/exchange/%2F/{x}")
    wait(d, lambda d: "No bindings" in (text_of(d, "#exchange-bindings") or ""), "no bindings")
    fill_in(d, "#exchange-bind-peer", q)
    fill_in(d, "#exchange-bind-routing-key", "rk-1")
    add_arg(d, "exchange-bind", "x-match", "all", link=False)
    add_arg(d, "exchange-bind", "level", "3", "number", link=False)
    shoot(d, "#exchange-bind", "bind.png")
    d.find_element(By.ID, "exchange-bind-submit").click()
    wait(d, banner_has("Bound"), "bound from the exchange page")
    assert _bindings(b, x, q) == [("rk-1", {"x-match": "all", "level": 3})]
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#exchange-bindings-grid tr[data-peer="{q}"]'), "the binding listed")
    # from the queue's page: from the exchange
    goto(d, f"#/queue/%2F/{q}")
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, '#queue-bindings-grid tr[data-routing-key="rk-1"]'), "rk-1 listed")
    fill_in(d, "#queue-bind-peer", x)
    fill_in(d, "#queue-bind-routing-key", "rk-2")
    d.find_element(By.ID, "queue-bind-submit").click()
    wait(d, banner_has("Bound"), "bound from the queue page")
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, '#queue-bindings-grid tr[data-routing-key="rk-2"]'), "rk-2 listed")
    assert [k for k, _ in _bindings(b, x, q)] == ["rk-1", "rk-2"]
    # the default exchange's binding has no Unbind button (it cannot be removed)
    assert not d.find_elements(By.CSS_SELECTOR,
                               f'#queue-bindings-grid tr[data-routing-key="{q}"] button')
    # unbind rk-1 from the queue page
    click(d, '#queue-bindings-grid tr[data-routing-key="rk-1"] button.unbind')
    wait(d, banner_has("Unbound"), "unbound from the queue page")
    wait(d, lambda d: not d.find_elements(
        By.CSS_SELECTOR, '#queue-bindings-grid tr[data-routing-key="rk-1"]'), "rk-1 gone")
    assert [k for k, _ in _bindings(b, x, q)] == ["rk-2"]
    # and rk-2 from the exchange page
    goto(d, f"#/exchange/%2F/{x}")
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, '#exchange-bindings-grid tr[data-routing-key="rk-2"]'), "rk-2 there")
    click(d, '#exchange-bindings-grid tr[data-routing-key="rk-2"] button.unbind')
    wait(d, lambda d: "No bindings" in (text_of(d, "#exchange-bindings") or ""), "all gone")
    assert _bindings(b, x, q) == []
    # to another exchange (exchange.bind): listed on both exchanges' pages
    x2 = f"{unique}-x2"
    assert call(b, "PUT", f"/api/exchanges/%2F/{x2}", {"type": "fanout"}, auth=ADMIN)[0] == 201
    Select(d.find_element(By.ID, "exchange-bind-dtype")).select_by_value("e")
    fill_in(d, "#exchange-bind-peer", x2)
    fill_in(d, "#exchange-bind-routing-key", "to-x2")
    d.find_element(By.ID, "exchange-bind-submit").click()
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#exchange-bindings-grid tr[data-peer="{x2}"]'), "the e2e binding")
    got = get(b, f"/api/bindings/%2F/e/{x}/e/{x2}", auth=ADMIN)
    assert [(g["routing_key"], g["destination_type"]) for g in got] == [("to-x2", "exchange")]
    goto(d, f"#/exchange/%2F/{x2}")
    wait(d, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#exchange-bindings-in-grid tr[data-peer="{x}"]'), "bound to x2")
    click(d, f'#exchange-bindings-in-grid tr[data-peer="{x}"] button.unbind')
    wait(d, lambda d: "No bindings" in (text_of(d, "#exchange-bindings-in") or ""), "unbound")
    assert get(b, f"/api/bindings/%2F/e/{x}/e/{x2}", auth=ADMIN) == []
    goto(d, f"#/exchange/%2F/{x}")
    wait(d, lambda d: "No bindings" in (text_of(d, "#exchange-bindings") or ""), "none from x")
    Select(d.find_element(By.ID, "exchange-bind-dtype")).select_by_value("q")
    # a binding to a queue that does not exist: the API's 404 shown, nothing bound
    fill_in(d, "#exchange-bind-peer", f"{q}-missing")
    d.find_element(By.ID, "exchange-bind-submit").click()
    wait(d, banner_has("Binding failed"), "the refusal")


# ---- publish, get and the charts on the queue page ----

def test_publish_and_get_from_the_queue_page(driver, dash_broker, unique):
    d, b = driver, dash_broker
    assert call(b, "PUT", f"/api/queues/%2F/{unique}", {}, auth=ADMIN)[0] == 201
    login(d, b, ADMIN)
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "0", "the empty queue")
    assert not d.find_elements(By.ID, "publish-routing-key")  # it goes to this queue
    Select(d.find_element(By.ID, "publish-delivery-mode")).select_by_value("2")
    d.find_element(By.ID, "publish-headers").send_keys('{"n": 1}')
    d.find_element(By.ID, "publish-payload").send_keys("hello <b>queue</b>")
    shoot(d, "#publish-payload", "publish.png")
    d.find_element(By.ID, "publish-submit").click()
    wait(d, banner_has("published and routed"), "published")
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "1", "ready = 1")
    wait(d, lambda d: text_of(d, '#chart-queue-messages + .legend [data-series="ready"]')
         == "1", "the chart's ready value")
    Select(d.find_element(By.ID, "get-ackmode")).select_by_value("ack_requeue_false")
    d.find_element(By.ID, "get-submit").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#get-results pre"), "the message")
    assert d.find_element(By.CSS_SELECTOR, "#get-results pre").text == "hello <b>queue</b>"
    assert not d.find_elements(By.CSS_SELECTOR, "#get-results pre b")  # text, not HTML
    props = text_of(d, "#get-results .message")
    assert '"delivery_mode":2' in props and '"headers":{"n":1}' in props
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "0", "taken (acked)")
    assert get(b, f"/api/queues/%2F/{unique}", auth=ADMIN)["messages"] == 0


def test_queue_page_charts_rates_and_depths(driver, dash_broker, unique):
    d, b = driver, dash_broker
    stop = threading.Event()
    errors: list[BaseException] = []
    started = threading.Event()

    def traffic() -> None:  # ~200 msg/s in, a consumer acking 1 in 2 ... until told
        try:
            with connection_as_admin(b) as conn:
                ch = conn.channel()
                ch.queue_declare(unique)
                started.set()
                ch.basic_qos(prefetch_count=20)
                ch.basic_consume(unique, lambda c, m, p, body: c.basic_ack(m.delivery_tag))
                while not stop.is_set():
                    for _ in range(10):
                        ch.basic_publish("", unique, b"tick")
                    conn.sleep(0.05)
        except BaseException as e:  # reported by the test
            errors.append(e)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        assert started.wait(TIMEOUT)
        login(d, b, ADMIN)
        goto(d, f"#/queue/%2F/{unique}")

        def live(d) -> bool:
            vals = [text_of(d, f'#chart-queue-rates + .legend [data-series="{k}"]')
                    for k in ("publish", "deliver", "ack")]
            return all(v and v != "0.0/s" for v in vals)
        wait(d, live, "non-zero publish, deliver and ack rates on the queue page")
        assert text_of(d, '#chart-queue-messages + .legend [data-series="total"]') is not None
        # the queue is watched: the server keeps its history (samples in the API answer)
        q = get(b, f"/api/queues/%2F/{unique}?lengths_age=60&lengths_incr=5"
                   "&msg_rates_age=60&msg_rates_incr=5", auth=ADMIN)
        assert q["message_stats"]["publish_details"]["samples"]
        # the lines are drawn, not only the legends: the series drawn last on each chart
        # (on top, so whole whatever the values: ack on the rates, total on the depths)
        wait(d, lambda d: line_pixels(d, "chart-queue-rates", ACK) > 50
             and line_pixels(d, "chart-queue-messages", DELIVER) > 50, "the charts' lines")
        n0 = d.execute_script("return performance.now()")
        wait(d, lambda d: d.execute_script("return performance.now()") - n0 > 6000
             and live(d), "a few more samples")
        screenshot(d, "queue-page.png")
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not errors, errors


# ---- channels and connections ----

def _client(b, name: str):
    import pika
    params = _amqp_params(b)
    params.client_properties = {"connection_name": name, "team": "dashboard-tests"}
    return pika.BlockingConnection(params)


def test_channels_page_channel_and_connection_pages(driver, dash_broker, unique):
    d, b = driver, dash_broker
    conn = _client(b, f"client-{unique}")
    try:
        plain = conn.channel()
        confirm = conn.channel()
        confirm.confirm_delivery()
        confirm.basic_qos(prefetch_count=11)
        confirm.queue_declare(unique)
        confirm.basic_publish("", unique, b"one")
        confirm.basic_consume(unique, lambda *a: None, consumer_tag=f"tag-{unique}")
        plain.tx_select()
        cname = next(c["name"] for c in get(b, "/api/connections", auth=ADMIN)
                     if c["user_provided_name"] == f"client-{unique}")
        login(d, b, ADMIN)
        goto(d, "#/channels")
        row = f'#channels-grid tr[data-name="{cname} ({confirm.channel_number})"]'
        d.find_element(By.ID, "channels-filter").send_keys(cname)

        def listed(d) -> bool:
            conn.process_data_events(0)
            return (text_of(d, row + " td.prefetch") == "11"
                    and text_of(d, row + " td.unacked") == "1")
        wait(d, listed, "the confirm channel: prefetch 11, 1 unacked")
        assert text_of(d, row + " td.mode") == "C"
        tx_row = f'#channels-grid tr[data-name="{cname} ({plain.channel_number})"]'
        assert text_of(d, tx_row + " td.mode") == "T"
        assert text_of(d, "#channels-summary").startswith("1–2 of 2 channels")
        screenshot(d, "channels.png")
        # the channel's page, then its connection's page by the link
        click(d, row + " td a[href^='#/channel/']")
        wait(d, lambda d: f"tag-{unique}" in (text_of(d, "#channel-consumers") or ""),
             "the channel's consumer")
        assert text_of(d, "#tile-prefetch .v") == "11"
        assert "confirm" in text_of(d, "#channel-details")
        click(d, "#channel-connection")
        wait(d, lambda d: text_of(d, "#connection-name") == cname, "the connection page")
        wait(d, lambda d: len(d.find_elements(
            By.CSS_SELECTOR, "#connection-channels-grid tbody tr[data-name]")) == 2,
            "its two channels")
        props = text_of(d, "#client-properties-list")
        assert f"client-{unique}" in props and "dashboard-tests" in props
        assert "capabilities" in props  # nested tables shown as nested lists
        assert text_of(d, "#tile-channels .v") == "2"
        screenshot(d, "connection.png")
        # close it from its page: the client is told 320, the page goes back to the list
        click(d, "#close-connection button[data-write]")
        click(d, "#close-connection button[data-confirm]")
        wait(d, banner_has("closed"), "the close confirmed")
        wait(d, lambda d: d.execute_script("return location.hash") == "#/connections",
             "back on the list")
        import pika.exceptions

        def closed(_d) -> bool:
            try:
                conn.process_data_events(0.05)
            except pika.exceptions.ConnectionClosedByBroker as e:
                assert e.reply_code == 320
                return True
            return not conn.is_open
        wait(d, closed, "the client told 320 CONNECTION_FORCED")
        goto(d, "#/connection/" + quote(cname, safe=""))
        wait(d, lambda d: text_of(d, "#connection-missing") is not None, "a gone connection")
    finally:
        if conn.is_open:
            conn.close()


def test_connection_page_keeps_only_the_charted_window(driver, dash_broker, unique):
    """The connection page's data-rate points are trimmed to the chart's 10 minutes: a page
    left open does not grow (the clock is moved 11 minutes on; the next refresh keeps only
    its own point). Fails with the points kept forever."""
    d, b = driver, dash_broker
    conn = _client(b, f"window-{unique}")
    try:
        cname = next(c["name"] for c in get(b, "/api/connections", auth=ADMIN)
                     if c["user_provided_name"] == f"window-{unique}")
        login(d, b, ADMIN)
        Select(d.find_element(By.ID, "refresh")).select_by_value("2")
        goto(d, "#/connection/" + quote(cname, safe=""))

        def samples(d) -> int:
            return int(d.execute_script(
                "const c = document.getElementById('chart-connection-data');"
                "return c && c.dataset.samples || 0"))
        wait(d, lambda d: samples(d) >= 2, "two refreshes drawn")
        before = d.execute_script(  # in one go: no refresh in between
            "const real = Date.now; Date.now = () => real.call(Date) + 660000;"
            "return Number(document.getElementById('chart-connection-data').dataset.samples)")
        wait(d, lambda d: samples(d) != before, "a refresh after the clock moved")
        assert samples(d) == 1
    finally:
        d.execute_script("location.reload()")  # the real clock back for the next tests
        if conn.is_open:
            conn.close()


# ---- the vhost selector ----

def test_vhost_selector_filters_list_pages(driver, dash_broker, unique):
    d, b = driver, dash_broker
    vh = f"vh-{unique}"
    assert call(b, "PUT", f"/api/vhosts/{vh}", {}, auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/permissions/{vh}/{ADMIN[0]}",
                {"configure": ".*", "write": ".*", "read": ".*"}, auth=ADMIN)[0] in (201, 204)
    for v, name in (("%2F", f"{unique}-root"), (vh, f"{unique}-other")):
        assert call(b, "PUT", f"/api/queues/{v}/{name}", {}, auth=ADMIN)[0] == 201
        assert call(b, "PUT", f"/api/exchanges/{v}/{name}-x", {"type": "fanout"},
                    auth=ADMIN)[0] == 201
    login(d, b, ADMIN)
    try:
        goto(d, "#/queues")
        d.find_element(By.ID, "queues-filter").send_keys(unique)
        rows = "#queues-grid tbody tr[data-name]"
        wait(d, lambda d: texts(d, rows, "name") == [f"{unique}-other", f"{unique}-root"],
             "both queues")
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR,
                                          f'#vhost-select option[value="{vh}"]'), "the vhost")
        Select(d.find_element(By.ID, "vhost-select")).select_by_value(vh)
        d.find_element(By.ID, "queues-filter").send_keys(unique)  # a new page: a new filter
        wait(d, lambda d: texts(d, rows, "name") == [f"{unique}-other"],
             "only the vhost's queue")
        td.screenshot(d, "vhost-selector.png")
        # the add-queue form defaults to the selected vhost
        assert Select(d.find_element(By.ID, "new-queue-vhost")).first_selected_option.text == vh
        # the choice holds on the other list pages, and across a reload
        goto(d, "#/exchanges")
        wait(d, lambda d: (text_of(d, "#exchanges-summary") or "").endswith("exchanges")
             and f"{unique}-other-x" in (text_of(d, "#exchanges-table") or ""), "its exchange")
        assert f"{unique}-root-x" not in text_of(d, "#exchanges-table")
        assert set(texts(d, "#exchanges-grid tbody td:first-child")) == {vh}
        d.refresh()
        wait(d, lambda d: Select(d.find_element(By.ID, "vhost-select"))
             .first_selected_option.get_attribute("value") == vh, "remembered")
        # connections and channels: none in that vhost; all of them under "All"
        with connection_as_admin(b):
            goto(d, "#/connections")
            wait(d, lambda d: "No connections" in (text_of(d, "#connections-table") or ""),
                 "no connection in the vhost")
            goto(d, "#/channels")
            wait(d, lambda d: "No channels" in (text_of(d, "#channels-table") or ""),
                 "no channel in the vhost")
            Select(d.find_element(By.ID, "vhost-select")).select_by_value("")
            goto(d, "#/connections")
            wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#connections-grid tr[data-name]"),
                 "connections under All")
    finally:
        d.execute_script("localStorage.removeItem('syncmq.vhost')")


# ---- a monitoring user ----

def test_monitoring_user_gets_the_new_forms_disabled(driver, dash_broker, unique):
    """Every new write control is disabled for a user without the administrator tag; the
    read-only pages (channels, connection) are there. The broker refuses a forced write."""
    d, b = driver, dash_broker
    assert call(b, "PUT", f"/api/queues/%2F/{unique}", {}, auth=ADMIN)[0] == 201
    login(d, b, MONITOR)
    goto(d, "#/queues")
    wait(d, lambda d: d.find_elements(By.ID, "new-queue-submit"), "the add form")
    assert not d.find_element(By.ID, "new-queue-submit").is_enabled()
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: text_of(d, "#tile-ready .v") == "0", "the queue page")
    for button in ("queue-bind-submit", "publish-submit", "get-submit"):
        assert not d.find_element(By.ID, button).is_enabled(), button
    # a tampered page that sends the bind anyway: the API refuses, the page says so
    fill_in(d, "#queue-bind-peer", "amq.direct")
    d.execute_script("const b = document.getElementById('queue-bind-submit');"
                     "b.disabled = false; b.click()")
    wait(d, banner_has("Access refused"), "the refusal")
    assert get(b, f"/api/queues/%2F/{unique}/bindings", auth=ADMIN)[1:] == []
    with connection_as_admin(b) as conn:
        conn.channel()
        goto(d, "#/channels")
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#channels-grid tr[data-name]"),
             "the channels, read-only")


# ---- escaping ----

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_queue_named_with_html_is_shown_as_text(driver, dash_broker, unique):
    d, b = driver, dash_broker
    name = f"{unique}{XSS}"
    assert call(b, "PUT", f"/api/queues/%2F/{quote(name, safe='')}", {},
                auth=ADMIN)[0] == 201
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.exchange_declare(f"{unique}-x{XSS}", "direct")
        ch.queue_bind(name, f"{unique}-x{XSS}", XSS)
        ch.basic_publish("", name, XSS.encode())
    login(d, b, ADMIN)
    goto(d, "#/queues")
    d.find_element(By.ID, "queues-filter").send_keys(unique)
    wait(d, lambda d: text_of(d, "#queues-grid a.queue-link") == name, "the name as text")
    click(d, "#queues-grid a.queue-link")
    wait(d, lambda d: text_of(d, "#queue-name") == name, "the queue page")
    wait(d, lambda d: XSS in (text_of(d, "#queue-bindings") or ""), "the binding as text")
    d.find_element(By.ID, "get-submit").click()
    wait(d, lambda d: text_of(d, "#get-results pre") == XSS, "the payload as text")
    goto(d, f"#/exchange/%2F/{quote(f'{unique}-x{XSS}', safe='')}")
    wait(d, lambda d: name in (text_of(d, "#exchange-bindings") or ""), "the exchange page")
    assert d.execute_script("return window.__xss") is None
    assert not d.find_elements(By.CSS_SELECTOR, "#view img, #view script")
