"""``cds reviewers``: accounts of the review page (``/review``)."""

from __future__ import annotations

import sys

import click

from cds.access import ROLES
from cds.commands._settings import database, settings


def _accounts():  # type: ignore[no-untyped-def]
    from cds.review.accounts import ReviewerAccounts

    write, read = click.get_current_context().with_resource(database(settings().database_url))
    return ReviewerAccounts(write, read)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _run(action) -> None:  # type: ignore[no-untyped-def]
    from cds.review.accounts import AccountError

    try:
        action()
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def reviewers() -> None:
    """Reviewer accounts for the review page (werkzeug password hashes in the database)."""


_role = click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    default=("reviewer",),
    show_default=True,
    help="reviewer: calls, cards, feedback; auditor: also who read the audit. Repeatable.",
)
_stdin = click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")


@reviewers.command("add")
@click.argument("username")
@_role
@_stdin
def add(username: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create the account USERNAME (password: 12+ characters)."""
    accounts = _accounts()
    password = _password(password_stdin)
    _run(lambda: accounts.add(username, password, list(roles)))
    click.echo(f"reviewer {username} added ({', '.join(sorted(set(roles)))})")


@reviewers.command("passwd")
@click.argument("username")
@_stdin
def passwd(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password (ends their sessions, lifts a lock-out)."""
    accounts = _accounts()
    password = _password(password_stdin)
    _run(lambda: accounts.set_password(username, password))
    click.echo(f"password of {username} changed")


@reviewers.command("roles")
@click.argument("username")
@_role
def set_roles(username: str, roles: tuple[str, ...]) -> None:
    """Replace USERNAME's roles (ends their sessions)."""
    accounts = _accounts()
    _run(lambda: accounts.set_roles(username, list(roles)))
    click.echo(f"{username}: {', '.join(sorted(set(roles)))}")


@reviewers.command("disable")
@click.argument("username")
def disable(username: str) -> None:
    """Stop USERNAME from logging in (ends their sessions at once)."""
    accounts = _accounts()
    _run(lambda: accounts.set_disabled(username, True))
    click.echo(f"{username} disabled")


@reviewers.command("enable")
@click.argument("username")
def enable(username: str) -> None:
    """Let a disabled USERNAME log in again."""
    accounts = _accounts()
    _run(lambda: accounts.set_disabled(username, False))
    click.echo(f"{username} enabled")


@reviewers.command("list")
def list_accounts() -> None:
    """Every account: user name, roles, state."""
    for info in _accounts().list():
        state = "disabled" if info.disabled else "active"
        if info.locked_until:
            state += f", locked until {info.locked_until:%Y-%m-%d %H:%M} UTC"
        click.echo(f"{info.username}\t{','.join(info.roles)}\t{state}")
