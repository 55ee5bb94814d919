"""The warm-host registry in Ray's key-value store does not grow with every job ever run: the
list of hosts that drove a job is kept for a while after the job finished, then pruned. On a
real local Ray (the session's)."""

from __future__ import annotations

import uuid

import pytest

from actors import job_registry
from actors.job_registry import FINISHED_RETENTION_S

pytestmark = pytest.mark.ray


def _job() -> tuple[str, str]:
    return f"job-{uuid.uuid4().hex}", f"jobhost-{uuid.uuid4().hex}"


def test_host_lists_of_finished_jobs_are_pruned_after_the_retention(ray_session):
    start = 1_000_000.0
    old_job, old_host = _job()
    assert job_registry.claim(old_job, old_host)
    job_registry.release(old_job, old_host, finished=True, now=start)
    # Finished, but within the retention: still listed for operators.
    assert job_registry.hosts_of(old_job) == [old_host]

    paused_job, paused_host = _job()  # waits for a person: its host ends, the job is not final
    assert job_registry.claim(paused_job, paused_host)
    job_registry.release(paused_job, paused_host, now=start)

    new_job, new_host = _job()
    assert job_registry.claim(new_job, new_host)
    job_registry.release(new_job, new_host, finished=True, now=start + FINISHED_RETENTION_S + 1)

    assert job_registry.hosts_of(old_job) == []
    assert job_registry.hosts_of(new_job) == [new_host]
    assert job_registry.hosts_of(paused_job) == [paused_host]
    assert job_registry.host_of(new_job) is None and job_registry.job_of(new_host) is None


def test_an_idle_host_is_taken_by_one_caller_only_and_only_from_its_own_pool(ray_session):
    from concurrent.futures import ThreadPoolExecutor

    pool, other = f"farm-a/{uuid.uuid4().hex[:8]}", f"farm-b/{uuid.uuid4().hex[:8]}"
    hosts = [f"jobhost-{uuid.uuid4().hex}" for _ in range(3)]
    for host in hosts:
        job_registry.offer(pool, host)
    job_registry.offer(pool, hosts[0])  # offering twice keeps one entry
    assert sorted(job_registry.idle_hosts(pool)) == sorted(hosts)
    assert job_registry.take_idle(other) is None  # another farm never gets these hosts

    # Eight callers race for three hosts: each host goes to exactly one of them.
    with ThreadPoolExecutor(8) as callers:
        taken = list(callers.map(lambda _: job_registry.take_idle(pool), range(8)))
    assert sorted(name for name in taken if name) == sorted(hosts)
    assert taken.count(None) == 5 and job_registry.idle_hosts(pool) == []

    # A host leaving the pool learns whether somebody had taken it first.
    job_registry.offer(pool, hosts[1])
    assert job_registry.withdraw(pool, hosts[1]) is True
    assert job_registry.withdraw(pool, hosts[1]) is False
