"""The dashboard's Policies page (issue 16), end to end in headless Chromium against a real
syncmq (the fixtures and helpers of ``test_dashboard.py``; every wait a WebDriverWait on a
page condition).

- A policy made through the form (typed definition rows: numbers reach the API as
  numbers), listed, in force on a matching queue (the queue page shows the policy and its
  effective max-length, and the queue holds no more), updated through Edit, deleted.
- An operator policy through the same form; the header's vhost selector narrows both lists.
- A refused policy (unknown key) shows the API's reason; a non-number in a number row is
  refused in the page.
- A monitoring user: the lists' refusal explained, every write control disabled, a forced
  write refused by the API and shown.
"""

from __future__ import annotations

import test_dashboard as td  # skips this module too where Chromium or Selenium is missing
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
from test_dashboard_pages import add_arg, banner_has, click, fill_in, texts
from test_management import call, get

dash_broker = td.dash_broker
driver = td.driver


def open_form(d) -> None:
    goto(d, "#/policies")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#policy-vhost option[value="/"]'),
         "the policy form")


def fill_policy(d, name: str, pattern: str, apply_to: str = "queues", priority: str = "0",
                kind: str = "policies") -> None:
    Select(d.find_element(By.ID, "policy-kind")).select_by_value(kind)
    fill_in(d, "#policy-name", name)
    fill_in(d, "#policy-pattern", pattern)
    Select(d.find_element(By.ID, "policy-apply-to")).select_by_value(apply_to)
    fill_in(d, "#policy-priority", priority)


def row(kind: str, name: str) -> str:
    return f'#{kind} tr[data-name="{name}"]'


def effective(d, key: str) -> str | None:
    return text_of(d, f'#queue-effective-policy dd[data-key="{key}"]')


def test_policy_created_listed_applied_updated_deleted(driver, dash_broker, unique):
    d, b = driver, dash_broker
    pol = f"{unique}-limit"
    with connection_as_admin(b) as conn:
        ch = conn.channel()
        ch.queue_declare(unique)
        for i in range(5):
            ch.basic_publish("", unique, f"m{i}".encode())
    login(d, b, ADMIN)
    open_form(d)
    fill_policy(d, pol, f"^{unique}$", "queues", "5")
    add_arg(d, "policy-form", "max-length", "3")
    add_arg(d, "policy-form", "message-ttl", "600000")
    add_arg(d, "policy-form", "overflow")  # preset: drop-head
    add_arg(d, "policy-form", "dead-letter-exchange", f"{unique}-dlx")
    d.find_element(By.ID, "policy-submit").click()
    wait(d, banner_has(f"Policy '{pol}' saved"), "the policy saved")
    wait(d, lambda d: text_of(d, row("policies", pol)), "the policy listed")
    listed = text_of(d, row("policies", pol))
    assert f"^{unique}$" in listed and "max-length: 3" in listed and "queues" in listed
    # typed as RabbitMQ's UI types them: numbers are numbers
    p = get(b, f"/api/policies/%2F/{pol}", auth=ADMIN)
    assert p["definition"] == {"max-length": 3, "message-ttl": 600000, "overflow": "drop-head",
                               "dead-letter-exchange": f"{unique}-dlx"}
    assert type(p["definition"]["max-length"]) is int
    assert (p["priority"], p["apply-to"]) == (5, "queues")
    # the form is empty again
    assert d.find_element(By.ID, "policy-name").get_attribute("value") == ""
    td.screenshot(d, "policies.png")
    # in force: the queue page shows the policy and the effective max-length, and the queue
    # was cut to it (drop-head)
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: text_of(d, "#queue-policy") == pol, "the queue's policy")
    wait(d, lambda d: effective(d, "max-length") == "3" and text_of(d, "#tile-ready .v") == "3",
         "the effective max-length, in force")
    # update through Edit: the form takes the listed policy, typed
    open_form(d)
    wait(d, lambda d: text_of(d, row("policies", pol)), "the policy listed")
    click(d, row("policies", pol) + " .policy-edit")
    wait(d, lambda d: d.find_element(By.ID, "policy-name").get_attribute("value") == pol,
         "the form filled")
    assert d.find_element(By.ID, "policy-priority").get_attribute("value") == "5"
    assert Select(d.find_element(By.CSS_SELECTOR, '#policy-form .arg-row[data-key="max-length"] '
                                 ".arg-type")).first_selected_option.text == "number"
    fill_in(d, '#policy-form .arg-row[data-key="max-length"] .arg-value', "2")
    d.find_element(By.ID, "policy-submit").click()
    wait(d, banner_has(f"Policy '{pol}' saved"), "the policy updated")
    wait(d, lambda d: "max-length: 2" in (text_of(d, row("policies", pol)) or ""), "listed")
    assert get(b, f"/api/policies/%2F/{pol}", auth=ADMIN)["definition"]["max-length"] == 2
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: effective(d, "max-length") == "2" and text_of(d, "#tile-ready .v") == "2",
         "the new max-length in force")
    # delete (two steps, as every delete on the dashboard)
    open_form(d)
    wait(d, lambda d: text_of(d, row("policies", pol)), "the policy listed")
    click(d, row("policies", pol) + " button.danger")
    click(d, row("policies", pol) + " [data-confirm]")
    wait(d, banner_has(f"Deleting '{pol}' done"), "deleted")
    wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, row("policies", pol)), "unlisted")
    assert call(b, "GET", f"/api/policies/%2F/{pol}", auth=ADMIN)[0] == 404
    goto(d, f"#/queue/%2F/{unique}")
    wait(d, lambda d: text_of(d, "#queue-name") == unique and text_of(d, "#tile-ready .v") == "2"
         and "Arguments" in (text_of(d, "#queue-details") or ""), "the queue page")
    assert not d.find_elements(By.CSS_SELECTOR, "#queue-policy, #queue-effective-policy")


def test_operator_policy_and_vhost_selector(driver, dash_broker, unique):
    d, b = driver, dash_broker
    vh = f"vh-{unique}"
    assert call(b, "PUT", f"/api/vhosts/{vh}", {}, auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/policies/{vh}/{unique}-other",
                {"pattern": ".*", "definition": {"expires": 60000}}, auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/queues/%2F/{unique}", {}, auth=ADMIN)[0] == 201
    login(d, b, ADMIN)
    try:
        open_form(d)
        fill_policy(d, f"{unique}-op", f"^{unique}$", "queues", kind="operator-policies")
        # an operator policy offers only its keys
        assert not d.find_element(By.CSS_SELECTOR, '.arg-link[data-arg="overflow"]').is_displayed()
        add_arg(d, "policy-form", "max-length", "7")
        d.find_element(By.ID, "policy-submit").click()
        wait(d, banner_has(f"Operator policy '{unique}-op' saved"), "saved")
        wait(d, lambda d: text_of(d, row("operator-policies", f"{unique}-op")), "listed")
        assert get(b, f"/api/operator-policies/%2F/{unique}-op",
                   auth=ADMIN)["definition"] == {"max-length": 7}
        goto(d, f"#/queue/%2F/{unique}")
        wait(d, lambda d: text_of(d, "#queue-operator-policy") == f"{unique}-op"
             and effective(d, "max-length") == "7", "the operator policy in force")
        # a policy for exchanges: the exchange page shows it
        assert call(b, "PUT", f"/api/exchanges/%2F/{unique}-x", {"type": "direct"},
                    auth=ADMIN)[0] == 201
        open_form(d)
        fill_policy(d, f"{unique}-ae", f"^{unique}-x$", "exchanges", "1")
        add_arg(d, "policy-form", "alternate-exchange", f"{unique}-ae")
        d.find_element(By.ID, "policy-submit").click()
        wait(d, banner_has(f"Policy '{unique}-ae' saved"), "saved")
        assert get(b, f"/api/exchanges/%2F/{unique}-x", auth=ADMIN)["policy"] == f"{unique}-ae"
        goto(d, f"#/exchange/%2F/{unique}-x")
        wait(d, lambda d: text_of(d, "#exchange-policy") == f"{unique}-ae", "the exchange's policy")
        # the vhost selector narrows both lists
        open_form(d)
        wait(d, lambda d: text_of(d, row("policies", f"{unique}-other")), "all vhosts")
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'#vhost-select option[value="{vh}"]'),
             "the vhost in the selector")
        Select(d.find_element(By.ID, "vhost-select")).select_by_value(vh)
        wait(d, lambda d: texts(d, "#policies tr[data-name]", "vhost") == [vh]
             and "No operator policies" in (text_of(d, "#operator-policies") or ""), "narrowed")
        assert Select(d.find_element(By.ID, "policy-vhost")).first_selected_option.text == vh
    finally:
        d.execute_script("localStorage.removeItem('syncmq.vhost')")
        call(b, "DELETE", f"/api/operator-policies/%2F/{unique}-op", auth=ADMIN)
        call(b, "DELETE", f"/api/policies/%2F/{unique}-ae", auth=ADMIN)


def test_refused_policy_shows_the_apis_reason(driver, dash_broker, unique):
    d, b = driver, dash_broker
    login(d, b, ADMIN)
    open_form(d)
    fill_policy(d, unique, ".*")
    # a number that is not one: refused in the page, nothing sent
    add_arg(d, "policy-form", "max-length", "many")
    d.find_element(By.ID, "policy-submit").click()
    wait(d, banner_has("max-length must be a number"), "the typed-value refusal")
    click(d, '#policy-form .arg-row[data-key="max-length"] .arg-remove')
    # an unknown key: the API's 400 reason, shown as text
    add_arg(d, "policy-form", "no-such-key", "1", "number", link=False)
    status, body, _ = call(b, "PUT", f"/api/policies/%2F/{unique}-direct",
                           {"pattern": ".*", "definition": {"no-such-key": 1}}, auth=ADMIN)
    assert status == 400 and "no-such-key" in body["reason"]
    d.find_element(By.ID, "policy-submit").click()
    wait(d, banner_has("Saving the policy failed"), "the refusal")
    shown = text_of(d, "#banner")
    # the reason as RabbitMQ's UI shows it: its HTML escapes undone, never parsed
    reason = body["reason"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert " ".join(reason.split()) in " ".join(shown.split())
    assert call(b, "GET", f"/api/policies/%2F/{unique}", auth=ADMIN)[0] == 404


def test_monitoring_user_gets_policies_read_only(driver, dash_broker, unique):
    d, b = driver, dash_broker
    assert call(b, "PUT", f"/api/policies/%2F/{unique}",
                {"pattern": "^nothing$", "definition": {"max-length": 1}}, auth=ADMIN)[0] == 201
    try:
        login(d, b, MONITOR)
        open_form(d)
        wait(d, lambda d: "needs the policymaker or administrator tag"
             in (text_of(d, "#policies") or ""), "the listing's refusal explained")
        assert "needs the administrator tag" in text_of(d, "#operator-policies")
        assert "Read-only" in text_of(d, "#readonly-note")
        assert not d.find_element(By.ID, "policy-submit").is_enabled()
        assert not d.find_element(By.CSS_SELECTOR, '#policy-kind option[value="operator-policies"]'
                                  ).is_enabled()
        # a tampered page that sends it anyway: the API refuses, the page says so
        fill_policy(d, f"{unique}-forced", ".*")
        add_arg(d, "policy-form", "max-length", "1")
        d.execute_script("const b = document.getElementById('policy-submit');"
                         "b.disabled = false; b.click()")
        wait(d, banner_has("Access refused"), "the refusal")
        assert call(b, "GET", f"/api/policies/%2F/{unique}-forced", auth=ADMIN)[0] == 404
    finally:
        call(b, "DELETE", f"/api/policies/%2F/{unique}", auth=ADMIN)


def test_policymaker_writes_policies_not_operator_policies(driver, dash_broker, unique):
    """A policymaker (with permissions on the vhost) gets the form and the user policies;
    operator policies stay the administrator's: listed as refused, the option disabled."""
    d, b = driver, dash_broker
    user = (f"pm-{unique[-6:]}", "pm-secret")
    assert call(b, "PUT", f"/api/users/{user[0]}", {"password": user[1], "tags": "policymaker"},
                auth=ADMIN)[0] == 201
    assert call(b, "PUT", f"/api/permissions/%2F/{user[0]}",
                {"configure": ".*", "write": ".*", "read": ".*"}, auth=ADMIN)[0] in (201, 204)
    try:
        login(d, b, user)
        open_form(d)
        wait(d, lambda d: "needs the administrator tag" in (text_of(d, "#operator-policies")
                                                            or ""), "operator policies refused")
        assert not d.find_elements(By.ID, "readonly-note")
        assert not d.find_element(By.CSS_SELECTOR, '#policy-kind option[value="operator-policies"]'
                                  ).is_enabled()
        fill_policy(d, unique, f"^{unique}$")
        add_arg(d, "policy-form", "expires", "60000")
        d.find_element(By.ID, "policy-submit").click()
        wait(d, banner_has(f"Policy '{unique}' saved"), "saved by the policymaker")
        wait(d, lambda d: text_of(d, row("policies", unique)), "listed")
        assert get(b, f"/api/policies/%2F/{unique}", auth=ADMIN)["definition"] == {"expires": 60000}
    finally:
        call(b, "DELETE", f"/api/policies/%2F/{unique}", auth=ADMIN)
        call(b, "DELETE", f"/api/users/{user[0]}", auth=ADMIN)
