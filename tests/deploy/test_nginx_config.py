"""The local rewrite of deploy/nginx.conf (`bench.harness.shipped_nginx_config`, used by the
nginx tests, the cluster tests and the scale benchmark) keeps matching the shipped file: it
changes only addresses, ports and writable paths, nginx accepts the result, and a shipped file
that drifted from what the rewrite expects is refused instead of run half-rewritten."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from bench.harness import SHIPPED_NGINX, nginx_binary, shipped_nginx_config
from tests.support.nginx import check_config

INSTANCES = ["127.0.0.1:18081", "127.0.0.1:18082"]
SERVER = re.compile(r"server app:8080([^;]*);")
# The shipped lines a local run must not keep: where nginx listens, writes and logs.
LOCAL_ONLY = {
    "listen 80;",
    "pid /tmp/avatar-relay-nginx.pid;",
    "access_log /dev/stdout;",
    "error_log /dev/stderr warn;",
}


def changes(tmp_path: Path) -> tuple[list[str], list[str]]:
    """The lines the rewrite took out of the shipped file, and those it put in."""
    shipped = Counter(line.strip() for line in SHIPPED_NGINX.read_text().splitlines())
    conf = shipped_nginx_config(tmp_path, 18080, INSTANCES).read_text()
    local = Counter(line.strip() for line in conf.splitlines())
    return list((shipped - local).elements()), list((local - shipped).elements())


def test_only_addresses_ports_and_paths_change(tmp_path: Path) -> None:
    removed, added = changes(tmp_path)
    servers = [line for line in removed if SERVER.fullmatch(line)]
    assert len(servers) == 2  # both upstream blocks
    assert set(removed) - set(servers) == LOCAL_ONLY
    # Each instance takes the place of `app:8080` with the parameters the shipped line gives it.
    for line in servers:
        params = SERVER.fullmatch(line).group(1)  # type: ignore[union-attr]
        for address in INSTANCES:
            assert f"server {address}{params};" in added
    others = [line for line in added if not line.startswith("server 127.0.0.1:1808")]
    assert others, "the rewrite added no local paths"
    for line in others:
        assert str(tmp_path) in line or line == "listen 127.0.0.1:18080;", line


def test_nginx_accepts_the_rewritten_config(tmp_path: Path) -> None:
    nginx = nginx_binary()
    assert nginx is not None, "nginx not found: run the tests through scripts/test"
    conf = shipped_nginx_config(tmp_path, 18080, INSTANCES)
    check_config(nginx, conf)


@pytest.mark.parametrize(
    ("shipped_line", "drifted"),
    [
        ("listen 80;", "listen 8080;"),
        ("access_log /dev/stdout;", "access_log /var/log/nginx/access.log;"),
        ("server app:8080 max_fails=0;", "server relay:8080 max_fails=0;"),
    ],
)
def test_a_drifted_shipped_file_is_refused(tmp_path: Path, shipped_line: str, drifted: str) -> None:
    text = SHIPPED_NGINX.read_text()
    assert shipped_line in text
    copy = tmp_path / "shipped.conf"
    copy.write_text(text.replace(shipped_line, drifted))
    with pytest.raises(RuntimeError, match=re.escape(str(copy))):
        shipped_nginx_config(tmp_path, 18080, INSTANCES, shipped=copy)
