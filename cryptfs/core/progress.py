"""Progress bars on a terminal, silence elsewhere (CI logs, pipes, the agent)."""

from __future__ import annotations

import sys


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, desc: str, enabled: bool | None = None):
    """A byte-counting tqdm bar when stderr is a terminal (or ``enabled``), else a no-op."""
    if enabled is None:
        enabled = sys.stderr is not None and sys.stderr.isatty()
    if not enabled:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False)


def warn(message: str, prog: str = "cryptfs") -> None:
    print(f"{prog}: warning: {message}", file=sys.stderr)
