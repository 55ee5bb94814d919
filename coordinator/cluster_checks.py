"""Start-up checks for running on a Ray cluster of several nodes.

SQLite and the local object directory are files on one node: on a cluster each node would see
its own, and jobs would lose their rows and renders as work moves between nodes. A generated
auth secret is a file too, so each node would sign with its own. Refuse at start-up, with the
settings that fix it, rather than fail later in ways that look like data loss.
"""

from __future__ import annotations

from coordinator.settings import Settings


class ClusterSettingsError(RuntimeError):
    """The settings are only fit for one node, and the cluster has several."""


def alive_node_count() -> int:
    import ray

    if not ray.is_initialized():
        return 1
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_cluster_settings(settings: Settings, nodes: int | None = None) -> None:
    nodes = alive_node_count() if nodes is None else nodes
    if nodes <= 1:
        return
    problems = []
    if not settings.database_url:
        problems.append("DATABASE_URL must name a PostgreSQL server every node can reach "
                        "(SQLite is a file on one node)")
    if not settings.s3_bucket:
        problems.append("S3_BUCKET must name an S3 bucket every node can reach "
                        "(the local object directory is on one node)")
    if not (settings.auth_secret or settings.auth_jwks_url):
        problems.append("AUTH_SECRET (or AUTH_JWKS_URL) must be set so every node verifies "
                        "tokens with the same key (a generated secret is a file on one node)")
    if problems:
        raise ClusterSettingsError(
            f"This Ray cluster has {nodes} nodes; refusing to start: " + "; ".join(problems))
