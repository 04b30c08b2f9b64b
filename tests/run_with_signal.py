"""Run ``minicae ARGS`` in this process and signal it at a chosen moment (for tests).

    python tests/run_with_signal.py SIGNAL WHEN N [--rank R] -- train --out RUN ...

WHEN is ``batch`` (the signal arrives as batch N starts, 1-based over the
whole process) or ``save`` (inside the N-th checkpoint write, after the
temporary file holds the new bytes, before it replaces the old one). SIGNAL
is a name (SIGINT, SIGTERM, SIGKILL, SIGSTOP) sent with ``os.kill`` to this
very process, so the moment is exact whatever the machine's load. Under
mpirun, ``--rank R`` sends it on that rank only (the others run unchanged).
"""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicae import checkpoint, cli  # noqa: E402
from minicae.nn.module import Module  # noqa: E402


def main(argv):
    split = argv.index("--")
    mine, rest = argv[:split], argv[split + 1:]
    name, when, n = mine[0], mine[1], int(mine[2])
    rank = int(mine[mine.index("--rank") + 1]) if "--rank" in mine else None
    here = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    if rank is None or rank == here:
        signum = getattr(signal, name)
        count = [0]

        def fire():
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signum)

        if when == "batch":
            zero_grad = Module.zero_grad      # the trainer calls it once as each batch starts

            def counted(self):
                fire()
                return zero_grad(self)

            Module.zero_grad = counted
        else:
            write_zip = checkpoint._write_zip

            def slow_write(f, *args):
                write_zip(f, *args)
                f.flush()
                fire()

            checkpoint._write_zip = slow_write
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
