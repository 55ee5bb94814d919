"""The API served by Ray Serve, as users deploy it (the default placement's `Api` options):
open progress streams do not stall other callers."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from tests.jobs_helpers import get_job, start_job, wait_for_status

pytestmark = pytest.mark.ray

STREAMS = 8  # more than Serve's default of 5 requests at a time per replica (the Api sets none)


@pytest.fixture
def alice(local_farm):
    with local_farm.client("alice") as client:
        yield client


def test_open_progress_streams_do_not_stall_other_requests(alice, local_farm):
    job = start_job(alice, sceneCount=1, durationSeconds=4)
    wait_for_status(alice, job["id"], "storyboard_ready", timeout=120)  # streams stay open
    headers = {"Authorization": f"Bearer {local_farm.token('alice')}"}
    timeout = httpx.Timeout(15.0)
    with contextlib.ExitStack() as streams:
        for _ in range(STREAMS):
            client = streams.enter_context(httpx.Client(base_url=local_farm.url,
                                                        headers=headers, timeout=timeout))
            response = streams.enter_context(
                client.stream("GET", f"/api/v3/jobs/{job['id']}/events"))
            assert response.status_code == 200
            assert next(response.iter_lines()).startswith("id: ")
        # Every stream is still open; a poll and a listing still answer at once.
        assert get_job(alice, job["id"])["status"] == "storyboard_ready"
        assert alice.get("/api/v3/jobs", timeout=timeout).status_code == 200
