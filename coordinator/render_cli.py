"""``renderfarm render brief.json --out ad.mp4``: one ad from the shell, against a running service.

Submits the brief (the ``POST /jobs`` body), follows the job's progress (a bar on a terminal,
one line per change otherwise), optionally stops at the storyboard for a person to approve,
and downloads the finished MP4. Ctrl-C cancels the job on the service before exiting (130), so
an abandoned render does not keep the farm busy. Only HTTP: nothing here imports Ray or models.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

API = "/api/v3"
POLL_S = 0.5
FINAL = {"completed", "failed", "cancelled"}
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT


class RenderError(Exception):
    """Something the user must fix or know; printed as it is, exit 1."""


class Progress:
    """Shows each progress change: a tqdm bar of the whole job's percent on a terminal (its
    label the stage), plain lines otherwise (logs, CI)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.bar = tqdm(total=100, unit="%", file=stream, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}") \
            if stream.isatty() else None
        self.last: tuple | None = None

    def show(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        stage = progress.get("stage") or job["status"]
        percent = float(progress.get("percent") or 0)
        message = progress.get("message") or ""
        if job.get("queuePosition") is not None:
            message = f"{message} (queue position {job['queuePosition']})".strip()
        state = (job["status"], stage, percent, message)
        if state == self.last:
            return
        self.last = state
        if self.bar is not None:
            self.bar.set_description_str(stage)
            self.bar.set_postfix_str(message)
            self.bar.n = percent
            self.bar.refresh()
        else:
            print(f"[{percent:5.1f}%] {stage}: {message}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Service:
    """The v3 API with one user's token; non-2xx answers become ``RenderError`` with the
    envelope's ``error`` and ``code``."""

    def __init__(self, url: str, token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = url.rstrip("/")
        self.http = httpx.Client(base_url=self.base + API, headers=headers, timeout=60,
                                 follow_redirects=True)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise RenderError(f"cannot reach the service at {self.base}: {exc}") from None
        return _data(response)

    def download(self, path: str, out: Path) -> None:
        partial = out.with_name(out.name + ".part")
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    _data(response)
                with partial.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise RenderError(f"downloading the video failed: {exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)  # never leave a half-written ad.mp4 behind


def _data(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.is_success:
        return body.get("data") or {}
    error = body.get("error") or response.text[:200] or response.reason_phrase
    code = body.get("code")
    raise RenderError(f"{response.status_code} {error}" + (f" ({code})" if code else ""))


def load_brief(path: Path, client_id: str | None, review: bool) -> dict[str, Any]:
    try:
        brief = json.loads(path.read_text())
    except OSError as exc:
        raise RenderError(f"cannot read the brief: {exc}") from None
    except ValueError as exc:
        raise RenderError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(brief, dict):
        raise RenderError(f"{path} must hold a JSON object (the POST /jobs body)")
    if client_id:
        brief["context"] = {**(brief.get("context") or {}), "clientId": client_id}
    if not (brief.get("context") or {}).get("clientId"):
        raise RenderError("the brief has no context.clientId: pass --client ID")
    brief["advanced"] = {**(brief.get("advanced") or {}), "autoApprove": not review}
    return brief


def _review(service: Service, job: dict[str, Any], stream: TextIO) -> None:
    """Prints the storyboard and waits for Enter, then approves."""
    print(f"\nStoryboard of job {job['id']}:", file=stream)
    for scene in (job.get("storyboard") or {}).get("scenes", []):
        print(f"  {scene['scene_idx'] + 1}. [{scene['shotType']}, {scene['duration']:g} s] "
              f"{scene['description']}", file=stream)
        if scene.get("script"):
            print(f"     script: {scene['script']}", file=stream)
        if scene.get("image_url"):
            print(f"     image:  {service.base}{scene['image_url']}", file=stream)
    print("Press Enter to approve and render the video (Ctrl-C cancels the job).",
          file=stream, flush=True)
    if sys.stdin.readline() == "":
        raise RenderError("no answer on standard input: the job waits in storyboard_ready")
    service.call("POST", f"/jobs/{job['id']}/actions", json={"action": "approve"})


def _follow(service: Service, job_id: str, review: bool, stream: TextIO) -> dict[str, Any]:
    """Polls the job until it ends; returns its last state."""
    progress = Progress(stream)
    try:
        while True:
            job = service.call("GET", f"/jobs/{job_id}")
            progress.show(job)
            if job["status"] in FINAL:
                return job
            if review and job["status"] == "storyboard_ready":
                progress.close()
                _review(service, job, stream)
                progress = Progress(stream)
            time.sleep(POLL_S)
    finally:
        progress.close()


def render(*, brief_path: Path, out: Path, url: str, token: str | None, client_id: str | None,
           review: bool, stream: TextIO = sys.stderr) -> int:
    try:
        brief = load_brief(brief_path, client_id, review)
        service = Service(url, token)
        job_id = service.call("POST", "/jobs", json=brief)["id"]
    except RenderError as exc:
        print(f"renderfarm render: {exc}", file=stream)
        return 1
    print(f"job {job_id} submitted to {service.base}", file=stream, flush=True)
    try:
        job = _follow(service, job_id, review, stream)
        if job["status"] != "completed":
            reason = job.get("error") or "cancelled"
            code = f" ({job['errorCode']})" if job.get("errorCode") else ""
            raise RenderError(f"job {job_id} {job['status']}: {reason}{code}")
        service.download(f"/jobs/{job_id}/video", out)
    except KeyboardInterrupt:
        _cancel(service, job_id, stream)
        return EXIT_INTERRUPTED
    except RenderError as exc:
        print(f"renderfarm render: {exc}", file=stream)
        return 1
    print(f"job {job_id} completed: {out}", file=stream)
    return 0


def _cancel(service: Service, job_id: str, stream: TextIO) -> None:
    try:
        service.call("POST", f"/jobs/{job_id}/actions", json={"action": "cancel"})
        print(f"\ninterrupted: job {job_id} cancelled", file=stream)
    except RenderError as exc:  # e.g. it had completed meanwhile (409)
        print(f"\ninterrupted: job {job_id} not cancelled: {exc}", file=stream)
