"""``agent check``: validate the run configuration and the environment without fetching the key.

One line per check, so that an operator can fix everything in one pass: the configuration (and
the http warning run would give), the cipher directory (what the method's backend refuses
before the key: its kind, gocryptfs' flags, the model's digest against EXPECTED_MODEL_DIGEST),
FUSE and the mount point (or, for MOUNT_MODE=copy, the RAM target), the attester and whether it
can measure the launch as MEASURE asks, and the broker (reachable, which protocol version:
:meth:`KbsClient.probe`, which neither attests nor fetches). Exit 0 when everything is fine,
else the ``run`` code of the first failure, so that a script can act on ``check`` as it would
on ``run``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import exitcodes
from ..attesters import Attester
from ..errors import AgentError
from .config import RunConfig

__all__ = ["Checks", "check"]


class Checks:
    """The results so far; each is printed as it is made (``ok  ``, ``warn`` or ``FAIL``)."""

    def __init__(self) -> None:
        self.results: list[tuple[bool, str, int]] = []

    def record(self, ok: bool, what: str, code: int = exitcodes.RUN_CONFIG) -> None:
        """Print the line at once (a slow broker check must not hide the earlier results)."""
        self.results.append((ok, what, code))
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    def warn(self, what: str) -> None:
        """Something run would warn about: printed, but it does not fail the check."""
        print(f"warn {what}", flush=True)

    def fail(self, what: str, error: AgentError) -> None:
        """A failed check whose code is the error's own run code."""
        self.record(False, f"{what}: {error}", error.run_exit_code)

    @property
    def exit_code(self) -> int:
        """0, or the run code of the first failure: what run would have stopped on first."""
        failed = [code for ok, _, code in self.results if not ok]
        return failed[0] if failed else exitcodes.OK


def check(args: Any, environ: Mapping[str, str] = os.environ) -> int:
    """Validate configuration and environment without fetching the key; one line per check.

    What is checked is what run will need, in the mode it will run: FUSE (device and libfuse3)
    and an unused mount point for MOUNT_MODE=fuse, a RAM-backed empty target for copy.
    """
    checks = Checks()
    try:
        cfg = RunConfig.resolve(args, environ)
    except AgentError as e:
        checks.fail("configuration", e)
        return checks.exit_code
    if not cfg.secure:
        checks.record(True, "configuration: no DECRYPTION_KEY_URI, so run would start the command in the "
                            "clear (no attestation, no mount)")
        return exitcodes.OK
    checks.record(True, f"configuration: key {cfg.key_uri}, cipher dir {cfg.cipher_dir}, mount "
                        f"{cfg.mount_path} (MOUNT_MODE={cfg.mode})")
    warning = cfg.transport_warning()
    if warning:
        checks.warn(warning)
    backend = cfg.backend()
    try:
        checks.record(True, f"{backend.check_label}: {backend.describe()}")
    except AgentError as e:
        checks.fail(backend.check_label, e)
    if cfg.mode == "copy":
        check_copy_target(cfg, checks)
    else:
        check_fuse(cfg, checks)
    attester = check_attester(cfg, environ, checks)
    if attester is not None:
        check_measurement(cfg, attester, environ, checks)
        check_broker(cfg, attester, checks)
    return checks.exit_code


def check_fuse(cfg: RunConfig, checks: Checks) -> None:
    """/dev/fuse can be opened, libfuse3 loads, and the mount point is usable (empty, not mounted)."""
    from .fuse import fuse_hint, libfuse3_problem
    from .mount import check_mount_point

    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        checks.record(True, "/dev/fuse can be opened")
    except OSError as e:
        checks.record(False, f"/dev/fuse cannot be opened ({e.strerror}): {fuse_hint()}", exitcodes.RUN_MOUNT)
    problem = libfuse3_problem()
    if problem:
        checks.record(False, f"{problem}, or set MOUNT_MODE=copy", exitcodes.RUN_MOUNT)
    else:
        checks.record(True, "libfuse3 loads")
    try:
        check_mount_point(cfg.mount_path)
    except AgentError as e:
        checks.fail("mount point", e)
        return
    state = "exists" if os.path.isdir(cfg.mount_path) else "will be created"
    checks.record(True, f"mount point {cfg.mount_path} usable ({state})")


def check_copy_target(cfg: RunConfig, checks: Checks) -> None:
    """MOUNT_MODE=copy needs no FUSE: a RAM-backed, empty target instead."""
    from .ram import check_ram_target

    try:
        target = check_ram_target(cfg.mount_path)
    except AgentError as e:
        checks.fail("copy target", e)
        return
    checks.record(True, f"copy target {target} is RAM-backed and empty (no FUSE needed)")


def check_attester(cfg: RunConfig, environ: Mapping[str, str], checks: Checks) -> Attester | None:
    """The attester run would use (for auto: what it looked for when there is none)."""
    from ..attesters import select as select_attester

    try:
        attester = select_attester(cfg.attester, environ, allow_debug=cfg.allow_debug)
    except AgentError as e:
        checks.record(False, f"attester: {e}", exitcodes.RUN_ATTESTER)
        return None
    checks.record(True, f"attester: {attester.name} (tee {attester.tee})")
    return attester


def check_measurement(cfg: RunConfig, attester: Attester, environ: Mapping[str, str], checks: Checks) -> None:
    """Whether run could measure the model with this attester, as MEASURE asks (nothing is measured)."""
    from .launch import availability

    what = f"measurement (MEASURE={cfg.measure}, model-id {cfg.model_id})"
    if cfg.measure == "off":
        checks.warn(f"{what}: run would measure nothing")
        return
    try:
        found = availability(attester.name, environ)
    except AgentError as e:
        checks.fail(what, e)
        return
    if found:
        checks.record(True, f"{what}: {found.reason}")
    elif cfg.measure == "required":
        checks.record(False, f"{what}: {found.reason}; run would exit before any request",
                      exitcodes.RUN_ATTESTER)
    else:
        checks.warn(f"{what}: {found.reason}; run would start unmeasured")


def check_broker(cfg: RunConfig, attester: Attester, checks: Checks) -> None:
    """The broker is reachable and speaks a protocol version we know; the key is not fetched."""
    from ..kbs import KbsClient

    try:
        client = KbsClient(cfg.url, attester, dialect=cfg.dialect, key_alg=cfg.key_alg,
                           ca_bundle=cfg.ca_bundle, timeout=cfg.timeout)
        dialect = client.probe()
    except AgentError as e:
        checks.fail(f"broker {cfg.url}", e)
        return
    checks.record(True, f"broker {cfg.url}: reachable, speaks KBS protocol {dialect} (the key was not "
                        "fetched)")
