"""The ``renderfarm`` command: run the service, migrate the database, mint a local token."""

from __future__ import annotations

import argparse
import os
import sys

from coordinator.settings import get_settings


def _serve(args: argparse.Namespace) -> int:
    from coordinator.local_service import run_local_service

    return run_local_service(host=args.host, port=args.port, dashboard_port=args.dashboard_port)


def _db_upgrade(args: argparse.Namespace) -> int:
    from coordinator.db.migrate import upgrade_database

    upgrade_database(get_settings(), args.revision)
    print(f"database at {args.revision}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from coordinator.auth import issue_local_token

    settings = get_settings()
    if settings.auth_jwks_url:
        print("AUTH_JWKS_URL is set: tokens come from your identity provider", file=sys.stderr)
        return 2
    print(issue_local_token(settings, args.user, args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="renderfarm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API and renderers on a local Ray")
    serve.add_argument("--host", default=os.environ.get("RENDERFARM_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("RENDERFARM_PORT", 8000)))
    serve.add_argument("--dashboard-port", type=int,
                       default=int(os.environ.get("RENDERFARM_DASHBOARD_PORT", 8265)))
    serve.set_defaults(func=_serve)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply Alembic migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=_db_upgrade)

    token = commands.add_parser("token", help="print a bearer token the local service accepts")
    token.add_argument("user", help="user id (the JWT 'sub')")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    token.set_defaults(func=_token)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
