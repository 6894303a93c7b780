"""``jobqueue tenants``: login roles confined to a tenant, and per-tenant enqueue rate limits.

Mapping a role is what turns row-level security on for it (docs/sql-api.md, multi-tenant
mode); the library calls are ``set_tenant_role`` / ``set_tenant_rate_limit`` and friends.
"""

from __future__ import annotations

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json, print_table, report
from jobqueue.cli._params import json_option, option

TENANT_ROLE_COLUMNS = (("role_name", "login role"), ("tenant_id", "tenant"), ("created_at", "since"))
RATE_LIMIT_COLUMNS = (
    ("tenant_id", "tenant"),
    ("rate", "jobs/s"),
    ("burst", "burst"),
    ("tokens_available", "tokens now"),
    ("updated_at", "updated"),
)


@click.group()
def tenants() -> None:
    """Multi-tenant mode: login roles confined to a tenant, and enqueue rate limits per tenant."""


@tenants.command("list")
@json_option()
@pass_context
def tenants_list(ctx: Context, as_json: bool) -> None:
    """Login roles mapped to a tenant, and the tenants' rate limits."""
    jq = ctx.queue()
    roles, limits = jq.tenant_roles(), jq.tenant_rate_limits()
    if as_json:
        echo_json({"roles": roles, "rate_limits": limits})
        return
    print_table(f"tenant roles ({len(roles)})", TENANT_ROLE_COLUMNS, roles)
    print_table(f"rate limits ({len(limits)})", RATE_LIMIT_COLUMNS, limits)


@tenants.command("map")
@click.argument("role")
@click.argument("tenant")
@json_option()
@pass_context
def tenants_map(ctx: Context, role: str, tenant: str, as_json: bool) -> None:
    """Confine login ROLE to TENANT: its jobs get that tenant_id and it sees no other tenant's.

    \b
    Needs a jobqueue_admin role mapped to no tenant, and a schema owner that is neither a
    superuser nor BYPASSRLS (exit 78 otherwise). Example:
      jobqueue tenants map acme_worker acme
    """
    ctx.queue().set_tenant_role(role, tenant)
    report(as_json, {"role_name": role, "tenant_id": tenant}, f"role {role}: tenant {tenant}")


@tenants.command("unmap")
@click.argument("role")
@json_option()
@pass_context
def tenants_unmap(ctx: Context, role: str, as_json: bool) -> None:
    """Remove ROLE's tenant mapping (it is then unrestricted); exit 1 when it had none."""
    removed = ctx.queue().unset_tenant_role(role)
    report(
        as_json, {"role_name": role, "removed": removed}, f"role {role}: {'unmapped' if removed else 'was not mapped'}"
    )
    if not removed:
        raise SystemExit(1)


@tenants.command("limit")
@click.argument("tenant")
@option("--rate", type=click.FloatRange(0, 1_000_000, min_open=True), required=True, help="Jobs per second.")
@option("--burst", type=click.IntRange(1, 100_000_000), default=None, help="Largest burst.  [default: the rate]")
@json_option()
@pass_context
def tenants_limit(ctx: Context, tenant: str, rate: float, burst: int | None, as_json: bool) -> None:
    """Limit TENANT's enqueues to --rate jobs/s with bursts of --burst (over it: exit 75).

    \b
    Example:
      jobqueue tenants limit acme --rate 50 --burst 500
    """
    jq = ctx.queue()
    jq.set_tenant_rate_limit(tenant, rate, burst)
    row = next((r for r in jq.tenant_rate_limits() if r["tenant_id"] == tenant), None)
    if as_json:
        echo_json(row)
    elif row is not None:
        click.echo(f"tenant {tenant}: {row['rate']:g} jobs/s, burst {row['burst']}")


@tenants.command("unlimit")
@click.argument("tenant")
@json_option()
@pass_context
def tenants_unlimit(ctx: Context, tenant: str, as_json: bool) -> None:
    """Remove TENANT's enqueue rate limit; exit 1 when it had none."""
    removed = ctx.queue().clear_tenant_rate_limit(tenant)
    text = f"tenant {tenant}: {'no longer limited' if removed else 'had no limit'}"
    report(as_json, {"tenant_id": tenant, "removed": removed}, text)
    if not removed:
        raise SystemExit(1)
