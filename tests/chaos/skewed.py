"""Run the jobqueue CLI with this process's clock moved by $CHAOS_SKEW_S seconds (CHAOS-06).

``python -m tests.chaos.skewed <jobqueue arguments>``: time-machine moves every clock Python
reads (time.time, datetime.now, and time.monotonic too) and lets it tick on in real time,
as on a host whose clock is wrong. The database server's clock is untouched.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import time_machine

time_machine.travel(timedelta(seconds=float(os.environ["CHAOS_SKEW_S"])), tick=True).start()

from jobqueue.cli import main  # noqa: E402 - after the clock moved

sys.argv[0] = "jobqueue"
sys.exit(main())
