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
