"""Locust users for ``bench/load.py``: each polls one job with GET /api/v3/jobs/{id}, once per
``BENCH_POLL_S`` seconds, the way a frontend shows a job's progress. Configured through the
environment by ``bench/load.py``; not meant to be run by hand."""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, constant_pacing, task

JOB_IDS = os.environ["BENCH_JOB_IDS"].split(",")
HEADERS = {"Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}


class Poller(FastHttpUser):
    wait_time = constant_pacing(float(os.environ.get("BENCH_POLL_S", "5")))

    def on_start(self) -> None:
        self.job_id = random.choice(JOB_IDS)

    @task
    def poll(self) -> None:
        with self.client.get(f"/api/v3/jobs/{self.job_id}", headers=HEADERS,
                             name="GET /jobs/{id}", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
