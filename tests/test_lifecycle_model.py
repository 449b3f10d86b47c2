"""The lifecycle as a state machine: random operations, then every output must hold exactly
what should be live, and the ledger must agree (hypothesis' stateful testing).

Operations: publish (a new title), volatile-only edit, unpublish, DELETE, re-publish, an
output disabled and enabled again, a subscriber failing (500) or gone (410), redelivery of
any past delivery, reconcile, a worker killed holding deliveries, and partial runs of the
queue. At the end the operator's repairs run (enable, stop failing, reconcile), the queue
drains, and each output's holdings are compared with the model. Runs on both backends.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from sqlalchemy import select, update

from publisher.errors import Conflict
from publisher.models import Delivery, Placement, utcnow
from tests.backends import backend_fixture, drain  # noqa: F401 - the fixture
from tests.helpers import bearer

OUTPUTS = ("recorder", "flaky", "gone")
IDS = ("r0", "r1", "r2")


def fold(log: Path, prefix: str, output: str) -> dict[str, tuple[int, str]]:
    """What a recording output holds, replayed from its own log; checks the order rules."""
    held: dict[str, tuple[int, str]] = {}
    retracted_at: dict[str, int] = {}
    if not log.exists():
        return held
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("output") != output or not entry.get("id", "").startswith(prefix):
            continue
        key, revision = entry["id"], entry["revision"]
        if entry["action"] == "publish":
            assert revision >= held.get(key, (0, ""))[0], f"{output}: older revision after newer"
            assert revision > retracted_at.get(key, 0), f"{output}: came back after retraction"
            held[key] = (revision, entry["title"])
        elif entry["action"] == "retract":
            held.pop(key, None)
            retracted_at[key] = revision
    return held


@pytest.mark.slow
def test_every_output_converges_whatever_happens(backend, make_app, base_settings, tmp_path):
    log = Path(base_settings["plugins"]["recording"]["log"])
    fail, gone = tmp_path / "fail", tmp_path / "gone"
    app = make_app(
        **backend.overrides(),
        plugins={"recording": {"log": str(log), "fail_flag": str(fail), "gone_flag": str(gone)}},
        delivery={"retry_schedule": [0, 0, 0]},
    )
    services = app.extensions["publisher"]
    dispatcher = services.dispatcher
    client, auth = app.test_client(), bearer(app)

    class Lifecycle(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.prefix = f"m{uuid.uuid4().hex[:8]}-"
            self.model: dict[str, dict] = {}  # id -> {"live": bool, "title": str}
            fail.unlink(missing_ok=True)
            gone.unlink(missing_ok=True)

        def _submit(self, key: str, **fields) -> None:
            record = {"id": self.prefix + key, "title": "t", "published": True, **fields}
            answer = client.post(
                "/api/v1/records",
                data=json.dumps(record),
                headers={**auth, "Content-Type": "application/json"},
            )
            assert answer.status_code == 202, answer.json

        @rule(key=st.sampled_from(IDS), title=st.sampled_from(("a", "b", "c")))
        def publish(self, key: str, title: str) -> None:
            state = self.model.setdefault(key, {"heat": 0})
            self._submit(key, title=title, heat=state["heat"])
            state.update(live=True, title=title)

        @rule(key=st.sampled_from(IDS))
        def volatile_edit(self, key: str) -> None:
            state = self.model.get(key)
            if not state or not state.get("live"):
                return
            state["heat"] += 1
            self._submit(key, title=state["title"], heat=state["heat"])

        @rule(key=st.sampled_from(IDS))
        def unpublish(self, key: str) -> None:
            state = self.model.get(key)
            if state is None:
                return
            self._submit(key, title=state.get("title", "t"), heat=state["heat"], published=False)
            state["live"] = False

        @rule(key=st.sampled_from(IDS))
        def delete(self, key: str) -> None:
            if key in self.model:
                client.delete(f"/api/v1/records/{self.prefix}{key}", headers=auth)
                self.model[key]["live"] = False

        @rule(output=st.sampled_from(OUTPUTS), on=st.booleans())
        def switch_output(self, output: str, on: bool) -> None:
            dispatcher.set_enabled(output, on, "disabled by the model")

        @rule(flag=st.sampled_from(("fail", "gone")), on=st.booleans())
        def subscriber_fails(self, flag: str, on: bool) -> None:
            path = fail if flag == "fail" else gone
            path.touch() if on else path.unlink(missing_ok=True)

        @rule(data=st.data())
        def redeliver_any(self, data) -> None:
            with services.sessions() as session:
                ids = list(
                    session.scalars(
                        select(Delivery.id)
                        .where(Delivery.record_id.startswith(self.prefix))
                        .order_by(Delivery.created_at)
                    )
                )
            if ids:
                with contextlib.suppress(Conflict):  # out of date: refused, as the API's 409
                    dispatcher.redeliver(data.draw(st.sampled_from(ids)))

        @rule(key=st.sampled_from(IDS))
        def redeliver_oldest(self, key: str) -> None:
            """The likeliest to be out of date: a record's first delivery to each output."""
            with services.sessions() as session:
                ids = list(
                    session.scalars(
                        select(Delivery.id)
                        .where(Delivery.record_id == self.prefix + key)
                        .order_by(Delivery.created_at)
                        .limit(len(OUTPUTS))
                    )
                )
            for delivery_id in ids:
                with contextlib.suppress(Conflict):
                    dispatcher.redeliver(delivery_id)

        @rule(output=st.sampled_from(OUTPUTS))
        def reconcile(self, output: str) -> None:
            dispatcher.reconcile(output)

        @rule()
        def worker_killed(self) -> None:
            """A worker took pending deliveries and died: their lease runs out."""
            with services.sessions.begin() as session:
                session.execute(
                    update(Delivery)
                    .where(Delivery.status == "pending", Delivery.record_id.startswith(self.prefix))
                    .values(
                        lease_until=utcnow() - timedelta(seconds=1), receives=Delivery.receives + 1
                    )
                )
            dispatcher.sweep(grace=0)

        @rule(rounds=st.integers(1, 4) | st.just(1000))
        def run_some(self, rounds: int) -> None:
            """A worker takes a few messages, or everything there is."""
            drain(app, limit=rounds)

        def teardown(self) -> None:
            fail.unlink(missing_ok=True)
            gone.unlink(missing_ok=True)
            for output in OUTPUTS:  # the operator's repairs
                dispatcher.set_enabled(output, True)
            for _ in range(3):
                for output in OUTPUTS:
                    dispatcher.reconcile(output)
                dispatcher.sweep(grace=0)
                drain(app)
            self.check()

        def check(self) -> None:
            live = {self.prefix + k: s["title"] for k, s in self.model.items() if s.get("live")}
            with services.sessions() as session:
                ledger = session.execute(
                    select(Placement.record_id, Placement.output, Placement.held_revision).where(
                        Placement.record_id.startswith(self.prefix)
                    )
                ).all()
            for output in OUTPUTS:
                held = fold(log, self.prefix, output)
                assert {k: title for k, (_, title) in held.items()} == live, output
                confirmed = {r: h for r, o, h in ledger if o == output and h is not None}
                assert confirmed == {k: rev for k, (rev, _) in held.items()}, f"ledger of {output}"

    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=15 if backend.scaleout else 40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
