"""The dashboard's Shovels page (issue 20: RabbitMQ's "Shovel Status" and "Shovel
Management"), end to end in headless Chromium against a real syncmq running real shovels
(the fixtures and helpers of ``test_dashboard.py``; every wait a WebDriverWait on a page or
broker condition, never a sleep).

- A shovel added through the form (queue to queue on the same broker, ``amqp://`` both
  ends): the parameter RabbitMQ's form would send (numbers as numbers), listed running,
  the messages moved; Restart makes new connections and it goes on moving; Delete (two
  steps) stops it and clears the parameter.
- A shovel to a port that refuses connections is listed terminated with the API's reason;
  one to a listener that never answers is listed starting; a password in a URI is masked.
- Exchange destination, forward headers and "after initial length transferred": the shovel
  moves the backlog and deletes itself, and leaves the page.
- Bad input (no source queue, a prefetch that is not a number, a bad URI): the API's reason
  shown as text, nothing created.
- A monitoring user: the status, restart (RabbitMQ lets monitoring users restart and delete
  shovels), no definitions, the form disabled, a forced add refused by the API and shown.
- A policymaker: the definitions and the form, Delete from the definitions; the status
  refused (RabbitMQ's "Not monitor user") and explained.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

import test_dashboard as td  # skips this module too where Chromium or Selenium is missing
from amqp_helpers import TIMEOUT
from test_dashboard import (
    ADMIN,
    MONITOR,
    By,
    Select,
    connection_as_admin,
    goto,
    login,
    text_of,
    wait,
)
from test_dashboard_pages import banner_has, click, fill_in, shoot
from test_management import call, get

dash_broker = td.dash_broker
driver = td.driver


def free_port() -> int:
    """A port nothing listens on (bound, then closed: connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_page(d) -> None:
    goto(d, "#/shovels")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#shovel-vhost option[value="/"]'),
         "the shovel form")


def row(name: str) -> str:
    return f'#shovels-grid tr[data-name="{name}"]:not(.shovel-reason-row)'


def state(d, name: str) -> str | None:
    return text_of(d, row(name) + " .shovel-state")


def depth(b, queue: str) -> int:
    return get(b, f"/api/queues/%2F/{quote(queue, safe='')}", auth=ADMIN)["messages"]


def shovel_connections(b, name: str) -> set[str]:
    """The names of the shovel's connections (``Shovel <name>``, as RabbitMQ names them)."""
    return {c["name"] for c in get(b, "/api/connections", auth=ADMIN)
            if (c.get("client_properties") or {}).get("connection_name") == f"Shovel {name}"}


def publish(b, queue: str, n: int, start: int = 0) -> None:
    import pika
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        for i in range(start, start + n):
            ch.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))


def submit_shovel(d, name: str, src_queue: str = "", dest_queue: str = "",
                  prefetch: str = "", src_uri: str | None = None) -> None:
    fill_in(d, "#shovel-name", name)
    if src_uri is not None:
        fill_in(d, "#shovel-src-uri", src_uri)
    fill_in(d, "#shovel-src-queue", src_queue)
    fill_in(d, "#shovel-dest-queue", dest_queue)
    fill_in(d, "#shovel-src-prefetch-count", prefetch)
    d.find_element(By.ID, "shovel-submit").click()


def put_shovel(b, name: str, value: dict) -> None:
    assert call(b, "PUT", f"/api/parameters/shovel/%2F/{quote(name, safe='')}",
                {"value": value}, auth=ADMIN)[0] in (201, 204)


def delete_shovel(b, name: str) -> None:
    call(b, "DELETE", f"/api/parameters/shovel/%2F/{quote(name, safe='')}", auth=ADMIN)


def test_shovel_added_moves_messages_restarted_and_deleted(driver, dash_broker, unique):
    d, b = driver, dash_broker
    tag = unique[-6:]  # short names: this test makes the README's screenshot of the form
    name, src, dst = f"move-orders-{tag}", f"orders-{tag}", f"orders-archive-{tag}"
    publish(b, src, 10)
    login(d, b, ADMIN)
    open_page(d)
    Select(d.find_element(By.ID, "shovel-ack-mode")).select_by_value("on-confirm")
    fill_in(d, "#shovel-name", name)
    fill_in(d, "#shovel-src-queue", src)
    fill_in(d, "#shovel-dest-queue", dst)
    fill_in(d, "#shovel-src-prefetch-count", "5")
    shoot(d, "#shovel-form", "shovel-form.png")
    d.find_element(By.ID, "shovel-submit").click()
    wait(d, banner_has(f"Shovel '{name}' added"), "the shovel added")
    # what RabbitMQ's form sends: empty fields left out, numbers as numbers
    value = get(b, f"/api/parameters/shovel/%2F/{name}", auth=ADMIN)["value"]
    assert value == {"src-protocol": "amqp091", "src-uri": "amqp://", "src-queue": src,
                     "dest-protocol": "amqp091", "dest-uri": "amqp://", "dest-queue": dst,
                     "src-prefetch-count": 5, "src-delete-after": "never",
                     "dest-add-forward-headers": False, "ack-mode": "on-confirm"}
    assert d.find_element(By.ID, "shovel-name").get_attribute("value") == ""
    wait(d, lambda d: state(d, name) == "running", "listed running")
    assert text_of(d, row(name) + " .src-endpoint").startswith(src)
    assert text_of(d, row(name) + " .dest-endpoint").startswith(dst)
    assert text_of(d, row(name) + " .src-uri") == "amqp://"
    wait(d, lambda d: depth(b, dst) == 10 and depth(b, src) == 0, "the messages moved")
    wait(d, lambda d: text_of(d, f'#shovel-definitions-grid tr[data-name="{name}"]'),
         "the definition listed")
    # Restart: new connections, and it goes on moving
    before = wait(d, lambda d: shovel_connections(b, name), "the shovel's connections")
    click(d, row(name) + " .shovel-restart")
    wait(d, banner_has(f"Restarting '{name}' done"), "restarted")
    wait(d, lambda d: (lambda now: now and not now & before)(shovel_connections(b, name)),
         "new connections")
    wait(d, lambda d: state(d, name) == "running", "running again")
    publish(b, src, 5, start=10)
    wait(d, lambda d: depth(b, dst) == 15 and depth(b, src) == 0, "moved after the restart")
    # Delete, two steps: the parameter cleared, the shovel stopped
    click(d, row(name) + " button.danger")
    click(d, row(name) + " [data-confirm]")
    wait(d, banner_has(f"Deleting '{name}' done"), "deleted")
    wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, row(name)), "unlisted")
    assert call(b, "GET", f"/api/parameters/shovel/%2F/{name}", auth=ADMIN)[0] == 404
    wait(d, lambda d: not shovel_connections(b, name), "its connections closed")
    publish(b, src, 3)
    assert depth(b, src) == 3 and depth(b, dst) == 15


def test_terminated_and_starting_states_with_reason(driver, dash_broker, unique):
    d, b = driver, dash_broker
    tag = unique[-6:]  # short names: this test makes the README's screenshot
    down, silent, local = f"edge-to-core-{tag}", f"never-answers-{tag}", f"local-move-{tag}"
    refused = free_port()  # nothing listens there: connection refused
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel accepts, nobody answers: the handshake never ends
    accepted: list[socket.socket] = []
    try:
        put_shovel(b, down, {"src-uri": "amqp://", "src-queue": f"orders-{tag}",
                             "dest-uri": f"amqp://edge:s3cret@127.0.0.1:{refused}",
                             "dest-queue": "orders", "reconnect-delay": 1})
        put_shovel(b, local, {"src-uri": "amqp://", "src-queue": f"returns-{tag}",
                              "dest-uri": "amqp://", "dest-exchange": "amq.topic",
                              "dest-exchange-key": "orders.moved", "ack-mode": "on-publish",
                              "src-prefetch-count": 100})
        put_shovel(b, silent, {
            "src-uri": "amqp://", "src-queue": f"audit-{tag}",
            "dest-uri": f"amqp://127.0.0.1:{listener.getsockname()[1]}"
                        "?connection_timeout=600000", "dest-queue": "audit"})
        login(d, b, ADMIN)
        open_page(d)
        wait(d, lambda d: state(d, down) == "terminated", "listed terminated")

        def same_reason(d):
            rows = get(b, "/api/shovels/%2F", auth=ADMIN)
            api_reason = next(r.get("reason") for r in rows if r["name"] == down)
            shown = text_of(d, f'tr.shovel-reason-row[data-name="{down}"] pre.shovel-reason')
            return api_reason and shown == api_reason
        wait(d, same_reason, "the API's reason shown")
        assert "refused" in text_of(d, f'tr.shovel-reason-row[data-name="{down}"]')
        wait(d, lambda d: state(d, silent) == "starting", "listed starting")
        listener.settimeout(TIMEOUT)
        accepted.append(listener.accept()[0])
        accepted[0].settimeout(TIMEOUT)
        assert accepted[0].recv(8) == b"AMQP\x00\x00\x09\x01"  # and no answer comes
        assert state(d, silent) == "starting"
        assert not d.find_elements(By.CSS_SELECTOR, f'tr.shovel-reason-row[data-name="{silent}"]')
        # the definition lists the URI with its password masked; nowhere on the page
        defs = f'#shovel-definitions-grid tr[data-name="{down}"]'
        wait(d, lambda d: "edge:[redacted]@127.0.0.1" in (text_of(d, defs) or ""), "masked")
        assert "s3cret" not in d.find_element(By.TAG_NAME, "body").text
        wait(d, lambda d: state(d, local) == "running", "the third one running")
        td.screenshot(d, "shovels.png")
        # a terminated shovel restarts on request too
        click(d, row(down) + " .shovel-restart")
        wait(d, banner_has(f"Restarting '{down}' done"), "restarted")
    finally:
        delete_shovel(b, down)
        delete_shovel(b, silent)
        delete_shovel(b, local)
        # its connection was taken and read (the protocol header): closing it now is a
        # clean close, where closing the listener with it pending would reset it (pika logs
        # a reset with a traceback)
        if not accepted:  # the test stopped early: take a pending connection all the same
            listener.setblocking(False)
            try:
                accepted.append(listener.accept()[0])
                accepted[0].settimeout(TIMEOUT)
                accepted[0].recv(8)
            except BlockingIOError:
                pass
        listener.close()
        for c in accepted:
            c.close()


def test_exchange_destination_headers_and_delete_after_queue_length(driver, dash_broker,
                                                                     unique):
    d, b = driver, dash_broker
    name, src, dst = f"{unique}-once", f"{unique}-src", f"{unique}-dst"
    publish(b, src, 4)
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.queue_declare(dst, durable=True)
        ch.queue_bind(dst, "amq.topic", f"{unique}.moved")
    login(d, b, ADMIN)
    open_page(d)
    Select(d.find_element(By.ID, "shovel-dest-type")).select_by_value("exchange")
    assert not d.find_element(By.ID, "shovel-dest-queue").is_displayed()
    fill_in(d, "#shovel-dest-exchange", "amq.topic")
    fill_in(d, "#shovel-dest-exchange-key", f"{unique}.moved")
    Select(d.find_element(By.ID, "shovel-dest-add-forward-headers")).select_by_value("true")
    Select(d.find_element(By.ID, "shovel-src-delete-after")).select_by_value("queue-length")
    fill_in(d, "#shovel-reconnect-delay", "2")
    fill_in(d, "#shovel-name", name)
    fill_in(d, "#shovel-src-queue", src)
    d.find_element(By.ID, "shovel-submit").click()
    wait(d, banner_has(f"Shovel '{name}' added"), "added")
    # the backlog moved through the exchange, then the shovel deleted itself
    wait(d, lambda d: depth(b, dst) == 4 and depth(b, src) == 0, "the backlog moved")
    wait(d, lambda d: call(b, "GET", f"/api/parameters/shovel/%2F/{name}", auth=ADMIN)[0]
         == 404, "the shovel deleted itself")
    wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, row(name))
         and not d.find_elements(By.CSS_SELECTOR, f'#shovel-definitions-grid tr[data-name="{name}"]'),
         "gone from the page")
    with connection_as_admin(b) as conn:
        m = conn.channel().basic_get(dst, auto_ack=True)
    assert m[1].headers["x-shovelled"][0]["shovel-name"] == name
    assert m[1].headers["x-shovelled"][0]["dest-exchange"] == "amq.topic"


def test_bad_input_shows_the_apis_reason(driver, dash_broker, unique):
    d, b = driver, dash_broker
    name = f"{unique}-bad"
    login(d, b, ADMIN)
    open_page(d)

    def refused(body: dict, what: str, text: str) -> None:
        """The page's refusal is the API's reason for ``body``, shown as text (with
        ``text`` in it)."""
        status, answer, _ = call(b, "PUT", f"/api/parameters/shovel/%2F/{name}-direct",
                                 {"value": body}, auth=ADMIN)
        assert status == 400, answer
        wait(d, banner_has("Adding the shovel failed"), what)
        reason = answer["reason"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        shown = " ".join(text_of(d, "#banner").split())
        assert " ".join(reason.split()) in shown, (reason, shown)
        assert text in shown
        # emptied, so that the next wait sees the next answer, not this one
        d.execute_script("const b = document.getElementById('banner');"
                         "b.hidden = true; b.textContent = ''")

    base = {"src-protocol": "amqp091", "src-uri": "amqp://", "dest-protocol": "amqp091",
            "dest-uri": "amqp://", "dest-queue": "dst", "src-delete-after": "never",
            "dest-add-forward-headers": False, "ack-mode": "on-confirm"}
    # no source queue: RabbitMQ's "Must specify 'src-exchange' or 'src-queue'"
    submit_shovel(d, name, "", "dst")
    refused(base, "no source queue", "Must specify 'src-exchange' or 'src-queue'")
    # a prefetch that is not a number, sent as typed: the API names it
    submit_shovel(d, name, "src", "dst", "ten")
    refused(dict(base, **{"src-queue": "src", "src-prefetch-count": "ten"}), "a bad prefetch",
            'src-prefetch-count should be a number, actually was <<"ten">>')
    # a URI that is not an AMQP one
    submit_shovel(d, name, "src", "dst", "", src_uri="http://example.com")
    refused(dict(base, **{"src-queue": "src", "src-uri": "http://example.com"}), "a bad URI",
            '"http://example.com" not a valid URI')
    assert call(b, "GET", f"/api/parameters/shovel/%2F/{name}", auth=ADMIN)[0] == 404
    # the page (and the broker) still work
    wait(d, lambda d: text_of(d, "#shovels-status") is not None
         and "Refresh failed" not in (text_of(d, "#banner") or ""), "the page refreshing")


def test_monitoring_user_sees_status_and_may_restart(driver, dash_broker, unique):
    d, b = driver, dash_broker
    name = f"{unique}-watched"
    put_shovel(b, name, {"src-uri": "amqp://", "src-queue": f"{unique}-q",
                         "dest-uri": "amqp://", "dest-queue": f"{unique}-q2"})
    try:
        login(d, b, MONITOR)
        open_page(d)
        wait(d, lambda d: state(d, name) == "running", "the status listed")
        assert "needs the policymaker or administrator tag" in text_of(d, "#shovel-definitions")
        assert "adding a shovel needs the policymaker or administrator tag" in \
            text_of(d, "#readonly-note")
        assert not d.find_element(By.ID, "shovel-submit").is_enabled()
        assert d.find_element(By.CSS_SELECTOR, row(name) + " .shovel-restart").is_enabled()
        before = wait(d, lambda d: shovel_connections(b, name), "its connections")
        click(d, row(name) + " .shovel-restart")
        wait(d, banner_has(f"Restarting '{name}' done"), "restarted by a monitoring user")
        wait(d, lambda d: (lambda now: now and not now & before)(shovel_connections(b, name)),
             "new connections")
        # a tampered page that adds one anyway: the API refuses, the page says so
        fill_in(d, "#shovel-name", f"{unique}-forced")
        fill_in(d, "#shovel-src-queue", "a")
        fill_in(d, "#shovel-dest-queue", "b")
        d.execute_script("const b = document.getElementById('shovel-submit');"
                         "b.disabled = false; b.click()")
        wait(d, banner_has("Access refused"), "the refusal")
        assert call(b, "GET", f"/api/parameters/shovel/%2F/{unique}-forced",
                    auth=ADMIN)[0] == 404
    finally:
        delete_shovel(b, name)


def test_policymaker_defines_and_deletes_but_sees_no_status(driver, dash_broker, unique):
    """A policymaker (permissions on /): the definitions and the form, Delete from the
    definitions (``/api/parameters/shovel``); the status is refused ("Not monitor user",
    RabbitMQ's rule) and explained, not asked for."""
    d, b = driver, dash_broker
    user = (f"pm-{unique[-6:]}", "pm-secret")
    name = f"{unique}-pm"
    assert call(b, "PUT", f"/api/users/{user[0]}", {"password": user[1], "tags": "policymaker"},
                auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/permissions/%2F/{user[0]}",
                {"configure": ".*", "write": ".*", "read": ".*"}, auth=ADMIN)[0] in (201, 204)
    try:
        login(d, b, user)
        open_page(d)
        wait(d, lambda d: "needs the monitoring or administrator tag"
             in (text_of(d, "#shovels-status") or ""), "the status refusal explained")
        assert not d.find_elements(By.ID, "readonly-note")
        submit_shovel(d, name, f"{unique}-a", f"{unique}-b")
        wait(d, banner_has(f"Shovel '{name}' added"), "added by the policymaker")
        defs = f'#shovel-definitions-grid tr[data-name="{name}"]'
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, defs), "listed")
        wait(d, lambda d: (lambda r: r and r[0]["state"] == "running")(
            [r for r in get(b, "/api/shovels", auth=ADMIN) if r["name"] == name]), "running")
        click(d, defs + " button.danger")
        click(d, defs + " [data-confirm]")
        wait(d, banner_has(f"Deleting '{name}' done"), "deleted by the policymaker")
        wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, defs), "unlisted")
        assert not [r for r in get(b, "/api/shovels", auth=ADMIN) if r["name"] == name]
    finally:
        delete_shovel(b, name)
        call(b, "DELETE", f"/api/users/{user[0]}", auth=ADMIN)
