"""When a worker claims the alert notifications' queue: apart from its regular claim.

Every worker serves ``jobqueue.alerts`` besides its own queues (:mod:`jobqueue.alerts.notify`).
Claiming it in the same ``jobqueue.claim`` call as the worker's queue turned every claim into
a multi-queue claim (a LATERAL scan per queue, merged), on the hot path, for a queue that is
empty nearly always. So the worker's regular claim names only its configured queues, and the
alerts queue is claimed on its own, in a short transaction before a round's regular claim,
when :meth:`AlertsClaim.take` says so:

* at once after a NOTIFY for the alerts queue (the database sends one with each notification
  it enqueues): prompt delivery, ahead of any backlog on the worker's queues;
* after an idle wait ran out (the worker's poll, or the due time of a delayed job), and
  before a burst worker exits: nothing is left behind;
* otherwise at most every ``every_s`` (the worker's poll interval), even while the regular
  claim is always full: a notification whose NOTIFY was missed (a listener reconnecting, or
  LISTEN off) or whose retry came due waits at most that long;
* again in the next round while it returned as many as it asked for (there may be more).
"""

from __future__ import annotations

import threading

#: Notifications claimed at most per look (they are few; the rest come in the next round).
ALERTS_BATCH = 10


class AlertsClaim:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._asked = threading.Event()
        self._asked.set()  # look once at start
        self._next = 0.0
        #: How many times the alerts queue was claimed from (tests and the bench read it).
        self.looks = 0

    def notified(self) -> None:
        """Look in the next round (a NOTIFY for the queue, a wait that ran out). Thread-safe."""
        self._asked.set()

    def take(self, now: float) -> bool:
        """Whether to claim the alerts queue in this round; if so, it counts as looked at
        (cleared before the claim runs, so a NOTIFY that arrives during it is not lost)."""
        if not self._asked.is_set() and now < self._next:
            return False
        self._asked.clear()
        self._next = now + self.every_s
        self.looks += 1
        return True

    def claimed(self, asked: int, got: int) -> None:
        """After a look: a full batch means there may be more, so look again next round."""
        if got >= asked:
            self._asked.set()
