"""syncmqctl: each verb run as a subprocess against a users file; file content and exit codes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib

import pytest

from syncmq.broker.auth import UserStore, check_password


def ctl(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncmq.ctl", *args], capture_output=True,
                          text=True, input=stdin, timeout=60)


@pytest.fixture
def f(tmp_path):
    return str(tmp_path / "users.toml")


def load(path):
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def ok(*args, **kw) -> subprocess.CompletedProcess:
    r = ctl(*args, **kw)
    assert r.returncode == 0, r.stderr
    return r


def err(*args, msg: str, code: int) -> subprocess.CompletedProcess:
    """A refused command: rabbitmqctl's exit ``code`` for the case (syncmq.ctl_errors)."""
    r = ctl(*args, stdin="")
    assert r.returncode == code, (r.stdout, r.stderr)
    assert msg in r.stderr, r.stderr
    return r


def test_add_user(f):
    r = ok("add_user", "--users-file", f, "alice", "s3cret")
    assert 'Adding user "alice" ...' in r.stdout
    data = load(f)
    assert set(data["users"]) == {"alice"}  # a new file holds no implicit guest
    assert data["vhosts"] == ["/"]
    h = data["users"]["alice"]["password_hash"]
    assert "s3cret" not in open(f).read() and check_password("s3cret", h)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    err("add_user", "--users-file", f, "alice", "other", msg='User "alice" already exists',
        code=70)
    assert load(f)["users"]["alice"]["password_hash"] == h


def test_add_user_password_from_stdin(f):
    ok("add_user", "--users-file", f, "bob", stdin="from-stdin\n")
    assert check_password("from-stdin", load(f)["users"]["bob"]["password_hash"])


def test_delete_user(f):
    ok("add_user", "--users-file", f, "alice", "pw")
    ok("add_user", "--users-file", f, "bob", "pw")
    ok("delete_user", "--users-file", f, "alice")
    assert set(load(f)["users"]) == {"bob"}
    err("delete_user", "--users-file", f, "alice", msg='User "alice" does not exist', code=67)


def test_change_password(f):
    ok("add_user", "--users-file", f, "alice", "old")
    ok("change_password", "--users-file", f, "alice", "new")
    h = load(f)["users"]["alice"]["password_hash"]
    assert check_password("new", h) and not check_password("old", h)
    err("change_password", "--users-file", f, "nobody", "x", msg='User "nobody" does not exist',
        code=67)


def test_set_user_tags(f):
    ok("add_user", "--users-file", f, "alice", "pw")
    ok("set_user_tags", "--users-file", f, "alice", "administrator", "monitoring")
    assert load(f)["users"]["alice"]["tags"] == ["administrator", "monitoring"]
    ok("set_user_tags", "--users-file", f, "alice")  # no tags clears them
    assert load(f)["users"]["alice"]["tags"] == []
    err("set_user_tags", "--users-file", f, "bob", "x", msg='User "bob" does not exist', code=67)


def test_vhosts(f):
    ok("add_vhost", "--users-file", f, "dev")
    ok("add_vhost", "--users-file", f, "dev")  # adding an existing vhost is fine
    ok("add_vhost", "--users-file", f, "odd \"name\"/x")
    assert load(f)["vhosts"] == ["/", "dev", "odd \"name\"/x"]
    r = ok("list_vhosts", "--users-file", f)
    assert r.stdout.splitlines()[1:] == ["name", "/", "dev", "odd \"name\"/x"]
    ok("add_user", "--users-file", f, "alice", "pw")
    ok("set_permissions", "--users-file", f, "-p", "dev", "alice", ".*", ".*", ".*")
    ok("delete_vhost", "--users-file", f, "dev")
    data = load(f)
    assert data["vhosts"] == ["/", "odd \"name\"/x"]
    assert data["users"]["alice"].get("permissions", {}) == {}  # permissions on it went too
    r = err("delete_vhost", "--users-file", f, "dev", msg="Virtual host 'dev' does not exist",
            code=65)
    assert not r.stderr.startswith("Error:")  # as rabbitmqctl prints it


def test_set_and_clear_permissions(f):
    ok("add_user", "--users-file", f, "alice", "pw")
    ok("add_vhost", "--users-file", f, "dev")
    ok("set_permissions", "--users-file", f, "alice", "^c-", "^w-", "")  # default -p /
    ok("set_permissions", "--users-file", f, "-p", "dev", "alice", ".*", "", "^r\\.")
    perms = load(f)["users"]["alice"]["permissions"]
    assert perms == {"/": {"configure": "^c-", "write": "^w-", "read": ""},
                     "dev": {"configure": ".*", "write": "", "read": "^r\\."}}
    store = UserStore.load(f)  # what the broker would read
    assert store.permission("alice", "dev").can_read("r.q")
    r = ok("list_permissions", "--users-file", f, "-p", "dev")
    assert "alice\t.*\t\t^r\\." in r.stdout.splitlines()
    err("set_permissions", "--users-file", f, "-p", "nope", "alice", ".*", ".*", ".*",
        msg="Error:\nVirtual host nope does not exist", code=69)
    err("set_permissions", "--users-file", f, "bob", ".*", ".*", ".*",
        msg="Error:\nUser bob does not exist", code=67)
    err("set_permissions", "--users-file", f, "alice", "(", ".*", ".*",
        msg="invalid regular expression", code=69)
    ok("clear_permissions", "--users-file", f, "-p", "dev", "alice")
    assert set(load(f)["users"]["alice"]["permissions"]) == {"/"}
    err("clear_permissions", "--users-file", f, "bob", msg="User bob does not exist", code=67)
    err("clear_permissions", "--users-file", f, "-p", "nope", "alice",
        msg="Virtual host nope does not exist", code=69)
    err("list_permissions", "--users-file", f, "-p", "nope",
        msg="Virtual host 'nope' does not exist", code=65)


def test_list_users(f):
    ok("add_user", "--users-file", f, "alice", "pw")
    ok("add_user", "--users-file", f, "bob", "pw")
    ok("set_user_tags", "--users-file", f, "bob", "monitoring")
    r = ok("list_users", "--users-file", f)
    assert r.stdout.splitlines() == ["Listing users ...", "user\ttags", "alice\t[]",
                                     "bob\t[monitoring]"]
    r = ok("-q", "list_users", "--users-file", f)
    assert r.stdout.splitlines()[0] == "user\ttags"


def test_usage_errors_exit_64(f):
    """rabbitmqctl's EX_USAGE (64), in both modes, not argparse's 2."""
    assert ctl().returncode == 64
    assert ctl("frobnicate", "--users-file", f).returncode == 64
    assert ctl("delete_user", "--users-file", f).returncode == 64  # missing NAME
    assert ctl("delete_user", "--users-file", f, "a", "b").returncode == 64  # too many
    assert ctl("set_permissions", "--users-file", f, "alice", ".*").returncode == 64
    assert not os.path.exists(f)


def test_password_missing_exit_codes(f):
    """No password argument and none on stdin: rabbitmqctl 3.10 exits 65 for add_user and
    70 for change_password."""
    err("add_user", "--users-file", f, "alice", msg="Password is not provided", code=65)
    ok("add_user", "--users-file", f, "alice", "pw")
    err("change_password", "--users-file", f, "alice", msg="Password is not provided", code=70)


def test_without_users_file_it_uses_the_management_api(f):
    # the remote mode (syncmq.ctl_remote, tested in test_ctl_remote.py): no broker there
    r = ctl("list_users", "--management-url", "http://127.0.0.1:9")
    assert r.returncode == 69  # rabbitmqctl's code for a node it cannot reach
    assert r.stdout == ""  # no banner, as rabbitmqctl
    assert r.stderr.startswith("Error: unable to perform an operation on node")
    assert "management API" in r.stderr and "--users-file" in r.stderr


def test_run_remote_hook_runs_the_remote_mode(capsys):
    from syncmq import ctl as ctl_module
    assert ctl_module.run_remote(["list_users", "--management-url", "http://127.0.0.1:9"]) == 69
    assert "cannot reach the management API" in capsys.readouterr().err


def test_malformed_file_is_an_error_and_left_alone(f):
    with open(f, "w") as fh:
        fh.write("not = = toml")
    err("add_user", "--users-file", f, "alice", "pw", msg="not valid TOML", code=65)
    assert open(f).read() == "not = = toml"


def test_writes_are_atomic_and_keep_the_mode(f, tmp_path):
    ok("add_user", "--users-file", f, "alice", "pw")
    os.chmod(f, 0o640)
    ino = os.stat(f).st_ino
    ok("add_user", "--users-file", f, "bob", "pw")
    assert os.stat(f).st_ino != ino  # replaced by rename, never rewritten in place
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["users.toml"]  # no temp file left behind


def test_planted_symlink_is_never_written_through(f, tmp_path, monkeypatch):
    """A symlink planted where the temp file goes (the old predictable name, or the name
    itself) is never opened: the victim file keeps its bytes, and a name that exists makes
    the save fail instead of writing through it."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    ok("add_user", "--users-file", f, "alice", "pw")
    before = open(f).read()
    # every pid the ctl subprocess could get, at the name it used to write to
    for pid in range(os.getpid(), os.getpid() + 200):
        os.symlink(victim, tmp_path / f".users.toml.{pid}.tmp")
    ok("add_user", "--users-file", f, "bob", "pw")
    assert victim.read_text() == "precious\n"
    assert "bob" in load(f)["users"]
    # in-process, with the random part of the name known: refused, nothing changed
    from syncmq.broker import auth

    monkeypatch.setattr(auth.secrets, "token_hex", lambda n: "k" * n)
    planted = tmp_path / f".users.toml.{os.getpid()}.{'k' * 8}.tmp"
    os.unlink(planted) if os.path.lexists(planted) else None
    os.symlink(victim, planted)
    store = UserStore.load(f)
    store.users.pop("bob")
    with pytest.raises(auth.UsersFileError, match="refusing to write"):
        auth.save(store, f)
    assert victim.read_text() == "precious\n"
    assert "bob" in load(f)["users"] and before != open(f).read()
    assert os.path.islink(planted)  # left alone, not removed or followed
