"""syncmqctl's policy verbs against a live broker, with rabbitmqctl 3.10.8's forms, banners,
tables and error texts (read off rabbitmqctl against a 3.10.8 node)."""

from __future__ import annotations

from test_ctl_remote import fails, ok, rows


def test_set_list_clear_policy(broker, unique):
    out = ok(broker, "set_policy", "--priority", "2", "--apply-to", "queues", unique,
             f"^{unique}", '{"max-length":1}')
    assert out == (f'Setting policy "{unique}" for pattern "^{unique}" to "{{"max-length":1}}" '
                   'with priority "2" for vhost "/" ...\n')
    ok(broker, "set_policy", f"{unique}-b", "^zz", '{"message-ttl":5}', "-p", "/")
    out = ok(broker, "list_policies")
    assert out.splitlines()[0] == 'Listing policies for vhost "/" ...'
    table = rows(out)
    assert table[0] == ["vhost", "name", "pattern", "apply-to", "definition", "priority"]
    mine = [r for r in table[1:] if r[1].startswith(unique)]
    assert mine == [["/", f"{unique}-b", "^zz", "all", '{"message-ttl":5}', "0"],
                    ["/", unique, f"^{unique}", "queues", '{"max-length":1}', "2"]]
    assert ok(broker, "clear_policy", unique) == f'Clearing policy "{unique}" on vhost "/" ...\n'
    fails(broker, "clear_policy", unique, msg="Error:\nParameter does not exist", code=69)
    ok(broker, "clear_policy", f"{unique}-b")


def test_operator_policy_verbs(broker, unique):
    out = ok(broker, "set_operator_policy", unique, "^a", '{"max-length":1}',
             "--apply-to", "queues")
    assert out.startswith(f'Setting operator policy override "{unique}" for pattern "^a" to ')
    out = ok(broker, "list_operator_policies")
    assert out.splitlines()[0] == 'Listing operator policy overrides for vhost "/" ...'
    assert ["/", unique, "^a", "queues", '{"max-length":1}', "0"] in rows(out)
    assert ok(broker, "clear_operator_policy", unique) == \
        f'Clearing operator policy "{unique}" on vhost "/" ...\n'
    fails(broker, "set_operator_policy", unique, "^a", '{"overflow":"drop-head"}',
          msg='Error:\nValidation failed\n\n[{<<"overflow">>,<<"drop-head">>}] are not '
              'recognised policy settings', code=69)


def test_policy_errors(broker, unique):
    fails(broker, "set_policy", unique, "^a", '{"foo":1}',
          msg='Error:\nValidation failed\n\n[{<<"foo">>,1}] are not recognised policy settings',
          code=69)
    fails(broker, "set_policy", unique, "^a", "notjson",
          msg="Error:\nJSON decoding error. Reason: badarg", code=69)
    fails(broker, "set_policy", "-p", "nosuch", unique, "^a", '{"max-length":1}',
          msg="Virtual host 'nosuch' does not exist", code=65)  # no Error: line, as rabbitmqctl
    fails(broker, "list_policies", "-p", "nosuch", msg="Virtual host 'nosuch' does not exist",
          code=65)
