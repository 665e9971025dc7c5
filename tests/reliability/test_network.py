"""The hosts harness (network.py) leaves nothing behind: not when a test ends, not when it failed,
not when an earlier run died before its finalizers ran."""

import subprocess

import pytest

from .network import PREFIX, Network, clean_stale, ip, require_network_namespaces


def leftovers(tag: str) -> list[str]:
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").splitlines()]
    return [name for name in names + links if name.startswith(tag)]


def test_hosts_reach_each_other_by_address_and_stop_leaves_nothing_even_after_a_failure() -> None:
    require_network_namespaces()
    network = Network(["a", "b"])
    with pytest.raises(RuntimeError, match="the test failed"):
        try:
            network.start()
            sleeper = subprocess.Popen([*network["b"].exec, "sleep", "600"])
            probe = f"import socket; socket.create_connection(('{network['b'].address}', 9), timeout=2)"
            reached = subprocess.run([*network["a"].exec, "python3", "-c", probe], capture_output=True, text=True)
            assert "ConnectionRefusedError" in reached.stderr  # b answered (nothing listens there): a route
            raise RuntimeError("the test failed")
        finally:
            network.stop()
    assert sleeper.wait(timeout=10) == -9  # what ran on a host was killed with it
    assert leftovers(network.tag) == []


def test_a_dead_runs_namespaces_and_links_are_cleaned_up_by_the_next_run() -> None:
    require_network_namespaces()
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid stands for a test run that died
    stale = Network(["x"], tag=f"{PREFIX}{finished.pid}")
    stale.start()
    assert leftovers(stale.tag)

    removed = clean_stale()

    assert f"{stale.tag}-x" in removed
    assert leftovers(stale.tag) == []
