"""The ``renderfarm`` command: run the service, migrate the database, mint a local token,
render one ad from a brief."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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


def _render(args: argparse.Namespace) -> int:
    from coordinator.render_cli import EXIT_INTERRUPTED, render

    try:
        return render(brief_path=args.brief, out=args.out, url=args.url, token=args.token,
                      client_id=args.client, review=args.review)
    except KeyboardInterrupt:  # before the job existed: nothing to cancel
        return EXIT_INTERRUPTED


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

    render = commands.add_parser(
        "render", help="render one ad from a brief on a running service, with live progress")
    render.add_argument("brief", type=Path, help="JSON file holding the POST /jobs body")
    render.add_argument("--out", type=Path, default=Path("ad.mp4"), help="where the MP4 goes")
    render.add_argument("--url", default=os.environ.get("RENDERFARM_URL", "http://127.0.0.1:8000"),
                        help="the service (RENDERFARM_URL)")
    render.add_argument("--token", default=os.environ.get("RENDERFARM_TOKEN"),
                        help="bearer token (RENDERFARM_TOKEN; `renderfarm token USER` mints one)")
    render.add_argument("--client", help="client id (sets the brief's context.clientId)")
    render.add_argument("--review", action="store_true",
                        help="stop at the storyboard and wait for Enter to approve it")
    render.set_defaults(func=_render)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
