"""rabbitmqadmin's every listing in every format, its default columns, sorting, and the
commands and options tests/interop/test_rabbitmqadmin.py leaves out, against syncmq and the
private RabbitMQ node, transcripts compared (issue 17; the scenario and what it normalises:
admin_formats_scenario.py). A guard reads ``rabbitmqadmin help subcommands`` and ``--help``
so that a subcommand, object type or format the two scenarios miss fails here.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import test_rabbitmqadmin as ra

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqadmin") is None,
                                reason="rabbitmqadmin is not installed")
rabbit_mgmt = ra.rabbit_mgmt

# /api/overview fields RabbitMQ has and syncmq does not serve (Erlang/OTP and RabbitMQ's
# release support status); syncmq adds python_version
OVERVIEW_NOT_SERVED = {"erlang_full_version", "erlang_version", "release_series_support_status"}
JSON_FORMATS = ("raw_json", "pretty_json")


def _help() -> tuple[str, str]:
    run = [subprocess.run(["rabbitmqadmin", *a], capture_output=True, text=True, timeout=30)
           for a in (("help", "subcommands"), ("--help",))]
    return run[0].stdout, run[1].stdout


def test_the_scenarios_cover_every_subcommand_object_and_format():
    from admin_formats_scenario import FORMATS, LISTS
    subcommands, options = _help()
    assert set(re.findall(r"^  list (\w+)", subcommands, re.M)) == set(LISTS)
    fmts = re.search(r"one of \[([^\]]+)\]", " ".join(options.split())).group(1)
    assert {f.strip() for f in fmts.split(",")} == set(FORMATS)
    here = pathlib.Path(__file__).parent
    source = "".join((here / f).read_text() for f in ("admin_scenario.py",
                                                        "admin_formats_scenario.py"))
    for verb in ("declare", "delete", "close", "purge"):
        for kind in re.findall(rf"^  {verb} (\w+)", subcommands, re.M):
            # literally, or in admin_scenario's loop over (kind, name) pairs
            assert re.search(rf'"{verb}", "{kind}"', source) or (
                f'("{kind}", ' in source and f'"{verb}", kind' in source), (verb, kind)
    for word in ("export", "import", "publish", "get", "show", "overview",
                 "payload_file=", "encoding=", "password_hash=", "hashing_algorithm=",
                 "tracing=", "node=", "queue_type=", "properties=", "payload_encoding=",
                 "ackmode=", "count=", '"-S"', '"-R"', "--sort=", "--sort-reverse"):
        assert word in source, word


def test_every_listing_and_format_as_rabbitmq(rabbitmq, rabbit_mgmt, broker, unique):
    from admin_formats_scenario import scenario
    tag = unique[-6:]
    theirs, their_extras = scenario(rabbit_mgmt, rabbitmq.port, tag)
    ours, our_extras = scenario(broker.management_port, broker.port, tag)
    assert theirs.keys() == ours.keys()
    for key in theirs:
        if key[0] == "overview" and key[1] in JSON_FORMATS:
            (r,), (s,) = theirs[key], ours[key]
            assert set(r) - OVERVIEW_NOT_SERVED <= set(s), (key, set(r) - set(s))
        else:
            assert ours[key] == theirs[key], f"{key}\nsyncmq:   {ours[key]}\n" \
                                             f"rabbitmq: {theirs[key]}"
    for key in [k for k in their_extras if k[0] == "depth"]:
        # nested fields: RabbitMQ's, less those syncmq does not serve (test_rabbitmqadmin)
        theirs_ = {c for c in their_extras.pop(key) if c.split(".")[0] not in ra.NOT_SERVED}
        missing = theirs_ - set(our_extras.pop(key))
        assert not missing, (key, sorted(missing))
    assert our_extras == their_extras
    # what is compared, as RabbitMQ answered it
    assert their_extras["sorted", ("-S", "name", "-R")] == [
        f"fs3-{tag}", f"fs2-{tag}", f"fs1-{tag}"]
    assert their_extras["reimported"] == sorted(
        f"{n}-{tag}" for n in ("fn", "fq", "fs1", "fs2", "fs3"))
    assert their_extras["payload_file"][1] == "from\nstdin \u00e9".encode()
    assert len(theirs["queues", "table"]) == 1 and len(theirs["users", "bash"]) == 1
