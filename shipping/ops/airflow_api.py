"""A small client of Airflow's REST API v2, for what this product does with it.

Posting an order, reading its run and its mapped instances, clearing one failed line,
unpausing the DAG. Airflow's answers are turned into typed outcomes here, once:
a trigger is *accepted*, *refused* (HTTP 400 with Airflow's reason, or 422), or meets an
existing run (HTTP 409, which Airflow answers with an unhelpful body).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests

logger = logging.getLogger(__name__)

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(RuntimeError):
    """Airflow answered with an unexpected status; keeps the status and the body."""

    def __init__(self, message: str, *, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TriggerStatus(enum.StrEnum):
    """How Airflow answered a trigger."""

    ACCEPTED = "accepted"
    EXISTS = "exists"  # a run with this id exists already (HTTP 409)
    REFUSED = "refused"  # Airflow refused the conf (HTTP 400/422)


@dataclass(frozen=True)
class TriggerOutcome:
    """The answer to a trigger: its status, Airflow's reason when refused, the run."""

    status: TriggerStatus
    http_status: int
    run: dict[str, Any] | None = None
    reason: str | None = None


def _log_line(item: Any) -> str:
    """One structured log entry as text: its event, and the error it carries, if any."""
    if not isinstance(item, dict):
        return str(item)
    line = str(item.get("event", ""))
    if item.get("error_detail"):
        line += " " + json.dumps(item["error_detail"], default=str)
    return line


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("message") or detail)
    return str(detail)


class AirflowClient:
    """Airflow's REST API v2 as the admin user of SimpleAuthManager (or any user)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str | None,
        *,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        if not password:
            raise ValueError(
                "no Airflow password: set AIRFLOW_ADMIN_PASSWORD or start the stack (make up)"
            )
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self.session = session or requests.Session()
        self._token: str | None = None

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    # ----------------------------------------------------------------- plumbing
    def _login(self) -> str:
        response = self.session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self._password},
            timeout=self.timeout,
        )
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login as {self.username!r} failed: {response.status_code} {_detail(response)}",
                status=response.status_code,
                body=response.text,
            )
        token = response.json()["access_token"]
        assert isinstance(token, str)
        return token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authenticated request; log in again once if the token expired."""
        extra = kwargs.pop("headers", None) or {}
        for fresh in (False, True):
            if self._token is None or fresh:
                self._token = self._login()
            response = self.session.request(
                method,
                f"{self.base_url}/api/v2{path}",
                headers={**extra, "Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
                **kwargs,
            )
            if response.status_code != 401:
                return response
        return response

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        if response.status_code == 404:
            raise LookupError(f"{path}: not found")
        if response.status_code not in ok:
            raise AirflowApiError(
                f"{method} {path}: {response.status_code} {_detail(response)}",
                status=response.status_code,
                body=response.text,
            )
        return response.json()

    # ------------------------------------------------------------------- calls
    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG. Raises LookupError while the DAG is not known yet."""
        self._json("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> TriggerOutcome:
        """Create a run of ``dag_id`` with ``conf`` under ``run_id``, now."""
        response = self.request(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)},
        )
        if response.status_code in (200, 201):
            return TriggerOutcome(TriggerStatus.ACCEPTED, 200, run=response.json())
        if response.status_code == 409:
            return TriggerOutcome(TriggerStatus.EXISTS, 409, run=self.get_run(dag_id, run_id))
        if response.status_code in (400, 422):
            return TriggerOutcome(
                TriggerStatus.REFUSED, response.status_code, reason=_detail(response)
            )
        raise AirflowApiError(
            f"trigger {dag_id}/{run_id}: {response.status_code} {_detail(response)}",
            status=response.status_code,
            body=response.text,
        )

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The run, or None if there is none with this id."""
        try:
            run: dict[str, Any] = self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        except LookupError:
            return None
        return run

    def _pages(
        self, path: str, key: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a paginated collection (``limit``/``offset``, ``total_entries``)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._json(
                "GET", path, params={**(params or {}), "limit": 100, "offset": len(found)}
            )
            found.extend(page[key])
            if not page[key] or len(found) >= page["total_entries"]:
                return found

    def task_instances(
        self, dag_id: str, run_id: str, *, states: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Every task instance of the run, mapped ones included; only those in ``states``
        when given (Airflow filters: a 1000-line run answers with its few failing or
        running instances, not all of them)."""
        params = {"state": list(states)} if states else None
        return self._pages(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances", params
        )

    def mapped_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The mapped instances of one task, with their names (``rendered_map_index``)."""
        return self._pages(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped",
            "task_instances",
        )

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int
    ) -> dict[str, Any] | None:
        """One mapped task instance, or None when the run has no such instance (yet)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"
        try:
            instance: dict[str, Any] = self._json("GET", path)
        except LookupError:
            return None
        return instance

    def clear_mapped(
        self, dag_id: str, run_id: str, task_id: str, map_indexes: list[int]
    ) -> list[dict[str, Any]]:
        """Clear failed mapped instances and their downstream (the reducer) to re-run them."""
        return self._clear(dag_id, run_id, [[task_id, i] for i in map_indexes])

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        """Clear failed (or upstream-failed) unmapped tasks of a run so they run again."""
        return self._clear(dag_id, run_id, list(task_ids))

    def clear_waiting(
        self, dag_id: str, run_id: str, task_id: str, map_indexes: list[int]
    ) -> list[dict[str, Any]]:
        """Clear mapped instances whatever their state (a required action still waiting),
        without their downstream."""
        return self._clear(
            dag_id, run_id, [[task_id, i] for i in map_indexes], only_failed=False, downstream=False
        )

    def _clear(
        self,
        dag_id: str,
        run_id: str,
        task_ids: list[Any],
        *,
        only_failed: bool = True,
        downstream: bool = True,
    ) -> list[dict[str, Any]]:
        # By default what the UI's clear dialog does with "Downstream" and "Only failed".
        body = {
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "include_downstream": downstream,
            "only_failed": only_failed,
            "dry_run": False,
        }
        result = self._json("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)
        cleared: list[dict[str, Any]] = result["task_instances"]
        return cleared

    def set_mapped_state(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, state: str, *, note: str
    ) -> None:
        """Set one mapped instance's state (e.g. ``success``), with a note saying why."""
        self._json(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}",
            json={"new_state": state, "note": note[:1000]},
        )

    def hitl_details(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's human-in-the-loop requests (required actions), answered or not."""
        return self._pages(f"/dags/{dag_id}/dagRuns/{run_id}/hitlDetails", "hitl_details")

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int,
        *,
        chosen_options: list[str],
        params_input: Mapping[str, Any],
    ) -> requests.Response:
        """Answer a required action as this client's user; the raw answer (409: answered)."""
        return self.request(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": chosen_options, "params_input": dict(params_input)},
        )

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The text of one try's log (the events, one per line)."""
        answer = self._json(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        content = answer.get("content", "")
        if isinstance(content, list):
            return "\n".join(_log_line(item) for item in content)
        return str(content)

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 600.0,
        poll: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the run until it succeeds or fails.

        Raises:
            TimeoutError: The run is still going after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(dag_id, run_id)
            if run is None:
                raise LookupError(f"run {dag_id}/{run_id} does not exist")
            if on_poll is not None:
                on_poll(run)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)
