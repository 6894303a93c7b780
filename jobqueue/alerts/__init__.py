"""Alerts: rules and incidents live in the database; this package delivers them to people.

Delivery is ordinary work: for each notification the database enqueues a job of type
``jobqueue.notify`` on the queue ``jobqueue.alerts`` (:mod:`jobqueue.alerts.notify`), which
every worker claims besides its own queues (``jobqueue worker --no-alerts`` opts out). The
job sends to one channel (:mod:`jobqueue.alerts.channels`: SMTP email, Slack, PagerDuty
Events API v2, a signed webhook), so a notification is retried with backoff, dead-lettered
with a reason and listed like any other job.
"""
