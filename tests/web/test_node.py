"""Runs the Node unit tests of the browser client: codec vectors, Host Mode driver, resume."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

WEB_TESTS = Path(__file__).resolve().parent


def test_client_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node is not None, "node not found: run the tests through scripts/test"
    result = subprocess.run(
        # TAP explicitly: newer Node versions default to a human-readable reporter.
        [node, "--test", "--test-reporter=tap", str(WEB_TESTS / "codec.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The golden vectors really ran (a broken import would run zero tests and could still exit 0).
    assert "# fail 0" in result.stdout
    passed = int(result.stdout.split("# pass ")[1].split()[0])
    assert passed > 80
