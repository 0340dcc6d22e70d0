"""``run_parts``, where every long-running command starts its parts, freezes what startup built
(and collects young objects less often), and lets stage threads have the GIL sooner.

Checked in a fresh interpreter: the garbage collector's frozen set is process-wide, so the test
process's own history must not decide the answer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support import ROOT

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys
    from engine.cli.main import run_parts

    async def part(stop):
        print("frozen while running:", gc.get_freeze_count() > 0)
        print("young threshold:", gc.get_threshold()[0])
        print("switch interval:", sys.getswitchinterval())
        stop.set()

    print("frozen before:", gc.get_freeze_count() > 0)
    asyncio.run(run_parts(None, [part]))
    """
)


def test_the_parts_of_a_long_running_command_start_with_startup_objects_frozen() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == ["frozen before: False", "frozen while running: True",
                                           "young threshold: 10000", "switch interval: 0.0005"]
