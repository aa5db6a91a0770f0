"""``agent check``: validate the run configuration and the environment without fetching the key.

One line per check, so that an operator can fix everything in one pass: the configuration, the
cipher directory (what the method's backend can tell without the key), /dev/fuse and the mount
point, the attester, and the broker (reachable, which protocol version: :meth:`KbsClient.probe`,
which neither attests nor fetches). Exit 0 when everything is fine, else the ``run`` code of the
first failure, so that a script can act on ``check`` as it would on ``run``.
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
    """The results so far; each is printed as it is made (``ok  `` or ``FAIL``)."""

    def __init__(self) -> None:
        self.results: list[tuple[bool, str, int]] = []

    def record(self, ok: bool, what: str, code: int = exitcodes.RUN_CONFIG) -> None:
        self.results.append((ok, what, code))
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)

    def fail(self, what: str, error: AgentError) -> None:
        """A failed check whose code is the error's own run code."""
        self.record(False, f"{what}: {error}", error.run_exit_code)

    @property
    def exit_code(self) -> int:
        failed = [code for ok, _, code in self.results if not ok]
        return failed[0] if failed else exitcodes.OK


def check(args: Any, environ: Mapping[str, str] = os.environ) -> int:
    """Validate configuration and environment without fetching the key; one line per check."""
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
                        f"{cfg.mount_path}")
    backend = cfg.backend()
    try:
        checks.record(True, f"{backend.check_label}: {backend.describe()}")
    except AgentError as e:
        checks.fail(backend.check_label, e)
    check_fuse(cfg, checks)
    attester = check_attester(cfg, args, environ, checks)
    if attester is not None:
        check_broker(cfg, args, attester, checks)
    return checks.exit_code


def check_fuse(cfg: RunConfig, checks: Checks) -> None:
    """/dev/fuse can be opened, and the mount point is usable (empty, not mounted, a directory)."""
    from cryptfs.core.mount import mounted_paths  # not at import: the agent's CLI starts faster

    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        checks.record(True, "/dev/fuse can be opened")
    except OSError as e:
        checks.record(False, f"/dev/fuse cannot be opened ({e.strerror}): run the container with --device "
                             "/dev/fuse and --cap-add SYS_ADMIN", exitcodes.RUN_MOUNT)
    mp = os.path.realpath(cfg.mount_path)
    if mp in mounted_paths():
        checks.record(False, f"mount point {cfg.mount_path} is already mounted", exitcodes.RUN_MOUNT)
    elif os.path.isdir(mp) and os.listdir(mp):
        checks.record(False, f"mount point {cfg.mount_path} is not empty", exitcodes.RUN_MOUNT)
    elif os.path.exists(mp) and not os.path.isdir(mp):
        checks.record(False, f"mount point {cfg.mount_path} is not a directory", exitcodes.RUN_MOUNT)
    else:
        state = "exists" if os.path.isdir(mp) else "will be created"
        checks.record(True, f"mount point {cfg.mount_path} usable ({state})")


def check_attester(cfg: RunConfig, args: Any, environ: Mapping[str, str], checks: Checks) -> Attester | None:
    """The attester run would use (for auto: what it looked for when there is none)."""
    from ..attesters import select as select_attester

    try:
        attester = select_attester(cfg.attester, environ, allow_debug=getattr(args, "allow_debug", False))
    except AgentError as e:
        checks.record(False, f"attester: {e}", exitcodes.RUN_ATTESTER)
        return None
    checks.record(True, f"attester: {attester.name} (tee {attester.tee})")
    return attester


def check_broker(cfg: RunConfig, args: Any, attester: Attester, checks: Checks) -> None:
    """The broker is reachable and speaks a protocol version we know; the key is not fetched."""
    from ..kbs import KbsClient

    client = KbsClient(cfg.url, attester, dialect=getattr(args, "dialect", None),
                       ca_bundle=getattr(args, "ca_bundle", None), timeout=getattr(args, "timeout", 10.0))
    try:
        dialect = client.probe()
    except AgentError as e:
        checks.fail(f"broker {cfg.url}", e)
        return
    checks.record(True, f"broker {cfg.url}: reachable, speaks KBS protocol {dialect} (the key was not "
                        "fetched)")
