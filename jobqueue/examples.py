"""Example tasks: what `jobqueue demo` runs, and a quick way to try a worker.

    jobqueue worker --app jobqueue.examples:jq --queues demo
    jobqueue enqueue examples.resize_image '{"image": "cat.png"}' --queue demo --wait

Three kinds of handler, one per thing a queue must get right:

* ``examples.resize_image`` works for a few milliseconds and succeeds;
* ``examples.flaky_api`` fails transiently on its first ``fail_attempts`` attempts (decided
  from ``current_job().attempt``), or while a simulated partner outage lasts, then succeeds;
* ``examples.charge_card`` fails permanently for a declined card (no retry: straight to the
  dead-letter queue) and with a validation error for a non-positive amount.

Retry delays are short (a fifth of a second) so that the demo finishes in seconds; real
tasks keep the default exponential policy.
"""

from __future__ import annotations

import time
from typing import Any

from jobqueue.client import JobQueue
from jobqueue.models import ErrorClass
from jobqueue.tasks import current_job

#: The examples' handle; the database is resolved at first use (the worker's --database-url,
#: else $JOBQUEUE_DATABASE_URL, $DATABASE_URL, else the embedded server).
jq = JobQueue()

#: Short retry delays for the demo: 0.2 s, fixed, with the default 10 % jitter.
DEMO_RETRY_POLICY: dict[str, Any] = {"strategy": "fixed", "initial_delay": 0.2}
DEMO_MAX_ATTEMPTS = 5
#: A card number ending in this is declined (a permanent failure).
DECLINED_SUFFIX = "0002"


class PartnerUnavailable(ConnectionError):
    """The partner API answered 503: worth retrying."""

    status_code = 503


class CardDeclined(Exception):
    """The card issuer refused the charge: retrying cannot help."""

    error_class = ErrorClass.PERMANENT.value


@jq.task(name="examples.resize_image", retry=DEMO_RETRY_POLICY, max_attempts=DEMO_MAX_ATTEMPTS)
def resize_image(image: str, width: int = 640, work_ms: float = 5.0) -> dict[str, Any]:
    """Pretend to make a thumbnail: sleep ``work_ms`` milliseconds, return its name."""
    time.sleep(max(work_ms, 0.0) / 1000)
    stem = image.rsplit(".", 1)[0]
    return {"image": image, "thumbnail": f"{stem}_{width}w.jpg", "width": width}


@jq.task(name="examples.flaky_api", retry=DEMO_RETRY_POLICY, max_attempts=DEMO_MAX_ATTEMPTS)
def flaky_api(endpoint: str, fail_attempts: int = 2, down_until: float | None = None) -> dict[str, Any]:
    """Call a partner API that fails on the first ``fail_attempts`` attempts, then answers 200.

    ``down_until`` (a Unix time) simulates an outage: every attempt before it fails. An
    outage longer than the job's retry budget sends it to the dead-letter queue; redriven
    once the outage is over, it succeeds.
    """
    job = current_job()
    if down_until is not None and time.time() < down_until:
        raise PartnerUnavailable(f"{endpoint}: 503 Service Unavailable (partner outage)")
    if job.attempt <= fail_attempts:
        raise PartnerUnavailable(f"{endpoint}: 503 Service Unavailable (attempt {job.attempt})")
    return {"endpoint": endpoint, "status": 200, "attempt": job.attempt}


@jq.task(name="examples.charge_card", retry=DEMO_RETRY_POLICY, max_attempts=DEMO_MAX_ATTEMPTS)
def charge_card(order_id: str, card: str, amount_cents: int) -> dict[str, Any]:
    """Charge a card: declined cards fail permanently, a non-positive amount is invalid."""
    if amount_cents <= 0:
        raise ValueError(f"order {order_id}: amount_cents must be positive, got {amount_cents}")
    if card.endswith(DECLINED_SUFFIX):
        raise CardDeclined(f"order {order_id}: card ending {DECLINED_SUFFIX} declined by the issuer")
    time.sleep(0.002)
    return {"order_id": order_id, "charged_cents": amount_cents, "receipt": f"rcpt-{order_id}"}
