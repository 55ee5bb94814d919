"""Which warm job host drives which job, kept in Ray's cluster key-value store (the GCS, where
named actors live too), so every API replica and a host Ray restarted after a crash find it.

Two entries per job being driven: ``job/<job id>`` → host name (claimed with put-if-absent, so
two API replicas racing for one job agree on one host) and ``host/<host name>`` → job id (how a
restarted host knows which job it had). The host removes both when it ends. ``hosts/<job id>``
lists every host that has driven the job, in order (for operators and tests asking which actors
ran a job). It is kept for ``FINISHED_RETENTION_S`` after the job reaches a final state, then
pruned: a host ending with a finished job marks it (``finished/<time>/<job id>``, the time in
the key so pruning reads one key listing, no values) and removes the lists of jobs that
finished longer ago than that. The registry so holds the jobs being driven plus the last hour's.

Idle hosts wait in a pool: ``idle/<pool>/<host name>``, one key per idle host, put by the host
itself whenever it has no job (after it started, after each job). An API replica takes one by
deleting its key (``take_idle``): the delete answers how many keys it removed, so of two replicas
racing for a host exactly one gets it. A pool is one Serve application's farm (its settings and
renderers): a host never drives another farm's job.

Ray's ``internal_kv`` is what Serve and Tune keep their own state in; it is blocking, so
callers on an event loop run these functions in a thread.
"""

from __future__ import annotations

import time

from ray.experimental import internal_kv

NAMESPACE = "renderfarm-job-hosts"
# How long the hosts that drove a finished job stay listed (an operator looking into it).
FINISHED_RETENTION_S = 3600.0


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def host_of(job_id: str) -> str | None:
    """The name of the host registered for the job, if any (it may have died since)."""
    return _text(internal_kv._internal_kv_get(f"job/{job_id}", namespace=NAMESPACE))


def job_of(host_name: str) -> str | None:
    """The job a host had taken (read by a host that Ray restarted)."""
    return _text(internal_kv._internal_kv_get(f"host/{host_name}", namespace=NAMESPACE))


def claim(job_id: str, host_name: str) -> bool:
    """Registers ``host_name`` for the job unless another host is registered; True when the
    job is (now or already) this host's."""
    existed = internal_kv._internal_kv_put(f"job/{job_id}", host_name, overwrite=False,
                                           namespace=NAMESPACE)
    if existed and host_of(job_id) != host_name:
        return False
    internal_kv._internal_kv_put(f"host/{host_name}", job_id, namespace=NAMESPACE)
    earlier = hosts_of(job_id)
    if host_name not in earlier:
        internal_kv._internal_kv_put(f"hosts/{job_id}", "\n".join([*earlier, host_name]),
                                     namespace=NAMESPACE)
    return True


def hosts_of(job_id: str) -> list[str]:
    """Every host that has driven the job, the first first."""
    value = _text(internal_kv._internal_kv_get(f"hosts/{job_id}", namespace=NAMESPACE))
    return value.split("\n") if value else []


def release(job_id: str, host_name: str, *, finished: bool = False,
            now: float | None = None) -> None:
    """Removes the host's entries (the job's only while they still name this host). With
    ``finished`` (the job reached a final state), marks the job finished at ``now`` and prunes
    the host lists of jobs finished more than ``FINISHED_RETENTION_S`` before it."""
    if host_of(job_id) == host_name:
        internal_kv._internal_kv_del(f"job/{job_id}", namespace=NAMESPACE)
    internal_kv._internal_kv_del(f"host/{host_name}", namespace=NAMESPACE)
    if finished:
        now = time.time() if now is None else now
        internal_kv._internal_kv_put(f"finished/{now:014.3f}/{job_id}", b"", namespace=NAMESPACE)
        prune_finished(now - FINISHED_RETENTION_S)


def prune_finished(before: float) -> None:
    """Removes the host lists (and marks) of jobs that finished before ``before``."""
    for raw in internal_kv._internal_kv_list("finished/", namespace=NAMESPACE):
        key = raw.decode()
        _, at, job_id = key.split("/", 2)
        if float(at) < before:
            internal_kv._internal_kv_del(f"hosts/{job_id}", namespace=NAMESPACE)
            internal_kv._internal_kv_del(key, namespace=NAMESPACE)


def forget_dead(job_id: str, host_name: str) -> None:
    """Drops a registration whose host is gone for good (killed without restart), so the
    next poke can hand the job to a live host."""
    if host_of(job_id) == host_name:
        internal_kv._internal_kv_del(f"job/{job_id}", namespace=NAMESPACE)


def _idle_key(pool: str, host_name: str) -> str:
    return f"idle/{pool}/{host_name}"


def offer(pool: str, host_name: str) -> None:
    """Puts an idle host in its pool (idempotent)."""
    internal_kv._internal_kv_put(_idle_key(pool, host_name), b"", namespace=NAMESPACE)


def withdraw(pool: str, host_name: str) -> bool:
    """Takes the host out of its pool; True if it was there (nobody had taken it)."""
    return internal_kv._internal_kv_del(_idle_key(pool, host_name), namespace=NAMESPACE) > 0


def idle_hosts(pool: str) -> list[str]:
    """The names of the pool's idle hosts."""
    prefix = f"idle/{pool}/"
    return [raw.decode()[len(prefix):]
            for raw in internal_kv._internal_kv_list(prefix, namespace=NAMESPACE)]


def take_idle(pool: str) -> str | None:
    """Takes an idle host out of the pool for the caller alone, or None if none is idle."""
    for name in idle_hosts(pool):
        if withdraw(pool, name):
            return name
    return None
