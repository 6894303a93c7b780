"""The web layer: ``jobqueue serve``, an ASGI app with the HTTP API (``/api/v1``) and the dashboard.

An extra (``pip install 'jobqueue[web]'``): the core never imports this package. Every
route is a thin call of the library (:class:`jobqueue.client.JobQueue`) on a connection that
acts as the request's API token -- its database role and tenant -- so grants and row-level
security, not this code, decide what a request sees and may do (docs/web.md).

* ``app.py``      :func:`create_app`, the application factory
* ``auth.py``     tokens -> one database transaction per request under the token's role
* ``problems.py`` RFC 9457 problem+json errors naming the field
* ``api.py``      the ``/api/v1`` routes
"""

from __future__ import annotations

from jobqueue.web.app import create_app

__all__ = ["create_app"]
