"""Running a multi-process child (torchrun) from a test, retried only on a documented infrastructure error.

A multi-process test depends on things outside the code under test: a free TCP port for the
rendezvous store and gloo's full-mesh connect over loopback, both of which a loaded or busy machine
can refuse. Such a failure is retried (at most ``RETRIES`` times); anything else, an assertion or a
crash at exit included (SIGABRT, "terminate called without an active exception"), fails the test on the first run. The patterns are
narrow on purpose: each names one error that PyTorch prints when the port or the connection, not
the program, failed.
"""
from __future__ import annotations

import re
import subprocess

RETRIES = 2

#: stderr patterns of infrastructure errors, and why each is one
INFRASTRUCTURE_ERRORS = {
    # the rendezvous store's port was taken between torchrun picking it and binding it
    "port in use": r"EADDRINUSE|Address already in use",
    # the c10d TCP store could not listen / be reached (torch.distributed.DistNetworkError)
    "store unreachable": r"DistNetworkError|The server socket has failed to (listen|bind)",
    # gloo could not connect the ranks' pairs over loopback within its timeout
    "gloo connect": r"Gloo connectFullMesh failed",
    # the elastic agent's rendezvous timed out or was closed before all ranks joined
    "rendezvous": r"RendezvousTimeoutError|RendezvousConnectionError|RendezvousClosedError",
}


def infrastructure_error(stderr: str) -> str | None:
    """The name of the documented infrastructure error in a child's stderr, else None."""
    if re.search(r"AssertionError|terminate called without an active exception", stderr):
        return None
    for name, pattern in INFRASTRUCTURE_ERRORS.items():
        if re.search(pattern, stderr):
            return name
    return None


def run_child(cmd: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmd``; rerun it only when it failed with an infrastructure error. The last result is
    returned (the caller asserts on it), with the infrastructure errors of earlier tries noted."""
    notes = []
    for _ in range(RETRIES + 1):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        reason = infrastructure_error(proc.stderr) if proc.returncode != 0 else None
        if reason is None:
            break
        notes.append(reason)
    if notes:
        proc.stderr = f"[retried after infrastructure errors: {', '.join(notes)}]\n" + proc.stderr
    return proc
