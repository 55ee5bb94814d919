"""Whether renderer work that Serve has not handed to a replica yet will ever run.

A request waits unassigned when every replica is busy (normal queueing: it waits without a
limit of its own) or when the deployment has no running replica. Then it depends on the
cluster: if no alive node could hold one replica (its *total* resources, e.g. no GPU) and no
autoscaler can add a node, the work can never run and the job fails at once (``no_capacity``);
otherwise capacity is coming (a GPU node starting) and the wait gets ``capacity_wait_seconds``
(``capacity_timeout``), apart from the render time limit, which starts at the renderer.

Whether an autoscaler exists is the operator's statement (``RENDERFARM_AUTOSCALING``, set by
cluster.yaml), not guessed from Ray: Ray offers no public, reliable "an autoscaler runs here"
signal, and a wrong guess either hangs jobs or fails ones a starting node would have served.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import ray
from ray import serve

from actors.placement import Placement

# How long a request may wait unassigned before anyone looks why (keeps checks off the hot
# path: a request a replica takes at once costs nothing), and how stale a look may be.
CHECK_AFTER_S = 5.0
STATUS_TTL_S = 2.0

NO_CAPACITY = "no_capacity"
CAPACITY_TIMEOUT = "capacity_timeout"


class CapacityWatch:
    """One per job actor: answers "is anything coming for this deployment?" from cached looks
    at Serve's status and the cluster's nodes (each at most every ``STATUS_TTL_S``)."""

    def __init__(self, placement: Placement, *, autoscaling: bool, wait_limit_s: float):
        self.needs = placement.renderer_resources
        self.gpu = placement.render_gpus > 0
        self.autoscaling = autoscaling
        self.wait_limit_s = wait_limit_s
        self._looks: dict[str, tuple[float, Any]] = {}

    @property
    def waiting_message(self) -> str:
        return "Waiting for a GPU worker" if self.gpu else "Waiting for a render worker"

    async def _cached(self, name: str, look: Callable[[], Any]) -> Any:
        seen = self._looks.get(name)
        if seen is None or time.monotonic() - seen[0] > STATUS_TTL_S:
            # Both are blocking calls to the cluster's control plane.
            seen = (time.monotonic(), await asyncio.to_thread(look))
            self._looks[name] = seen
        return seen[1]

    async def running_replicas(self, app_name: str, deployment_name: str) -> int:
        def look() -> int:
            app = serve.status().applications.get(app_name)
            deployment = app.deployments.get(deployment_name) if app else None
            return int(deployment.replica_states.get("RUNNING", 0)) if deployment else 0

        return await self._cached(f"{app_name}/{deployment_name}", look)

    async def a_node_fits(self) -> bool:
        """Whether some alive node's total resources hold one renderer replica."""
        def look() -> bool:
            return any(node.get("Alive") and all(
                node.get("Resources", {}).get(name, 0.0) >= amount
                for name, amount in self.needs.items()) for node in ray.nodes())

        return await self._cached("nodes", look)


class CapacityWait:
    """The wait of one renderer request for a replica to take it."""

    def __init__(self, watch: CapacityWatch, handle: Any, what: str,
                 on_wait: Callable[[str], Awaitable[None]] | None):
        self.watch = watch
        self.app_name = handle.app_name
        self.deployment_name = handle.deployment_name
        self.what = what
        self.on_wait = on_wait
        self._since: float | None = None  # when the deployment was first seen with no replica

    async def check(self) -> None:
        """Called while the request is still unassigned; raises ``CapacityProblem`` when the
        work can never run or waited too long for capacity."""
        if await self.watch.running_replicas(self.app_name, self.deployment_name):
            self._since = None  # replicas run but are busy: ordinary queueing
            return
        if not self.watch.autoscaling and not await self.watch.a_node_fits():
            needs = ", ".join(f"{amount:g} {name}" for name, amount in self.watch.needs.items())
            raise CapacityProblem(
                f"{self.what} cannot start: no node of the cluster can hold a renderer "
                f"({needs}) and the cluster does not autoscale; add such a node, or run the "
                "renderers without a GPU (RENDERFARM_RENDER_GPUS=0), then retry the job",
                NO_CAPACITY)
        now = time.monotonic()
        if self._since is None:
            self._since = now
            if self.on_wait:
                await self.on_wait(self.watch.waiting_message)
        elif now - self._since > self.watch.wait_limit_s:
            raise CapacityProblem(
                f"{self.what} waited {self.watch.wait_limit_s:.0f} s for a render worker that "
                "never started; check the cluster's GPU nodes and autoscaler, then retry the job",
                CAPACITY_TIMEOUT)


class CapacityProblem(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code
