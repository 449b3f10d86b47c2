"""The output contract kit: subclass :class:`OutputContract` to test an output against the
rules every output must meet (docs/plugins.md, "The output contract").

Each rule is its own test method, and a broken rule fails with a message that starts
``rule N (...)``. The kit observes what the output holds only through ``output.inventory()``;
rules that need it are skipped, with the reason, for an output that has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from publisher.outputs import DeliveryError, Output
from publisher.testing.builders import Item, Lifecycle, deliver, deliver_many, make_event

RULES = {
    1: "a publish makes the revision held, and is idempotent",
    2: "a newer revision replaces the content",
    3: "retract removes; twice, or of an unknown record, is harmless",
    4: "an older event changes nothing; nothing comes back after a retraction",
    5: "deliver_many gives one outcome per item, in order; one failure fails only itself",
    6: "protected data goes only to an output that accepts it",
    7: "a permanent failure is reported as a permanent DeliveryError",
}


def rule(number: int, problem: str) -> str:
    """An assertion message that names the rule broken."""
    return f"rule {number} ({RULES[number]}): {problem}"


def optional_fixture(request: pytest.FixtureRequest, name: str, why: str) -> Any:
    """The test module's fixture ``name``, or a skip that says what providing it would check."""
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"no `{name}` fixture: {why}")


class OutputContract:
    """Subclass it in a test module, with a fixture named ``output`` that builds the output::

        class TestSitemap(OutputContract):
            @pytest.fixture
            def output(self, tmp_path):
                (output,) = load_outputs(publisher_sitemap, data_dir=str(tmp_path))
                return output

    Optional fixtures widen what is checked (each missing one skips its checks, saying why):

    - ``read_back``: ``read_back(record_id) -> str``, what the output holds for a record as
      text (its file, its feed entry): content is checked, not just revisions;
    - ``failing_output``: the same output made to fail for good (a folder it may not write,
      a subscriber answering 410): its failure must be a permanent ``DeliveryError``;
    - ``refused_record``: an ``OutputRecord`` this output refuses, to see that one failing
      item of a ``deliver_many`` batch fails only itself.

    Set ``inventory_required = True`` when the output must have ``inventory()``: then a
    missing one fails every rule instead of skipping those that need it.
    """

    inventory_required: ClassVar[bool] = False

    @pytest.fixture(autouse=True)
    def _contract_shape(self, output: Output) -> None:
        """What every rule relies on; a wrong shape fails every rule, saying what is wrong."""
        assert isinstance(getattr(output, "name", None), str) and output.name, (
            f"an output needs a non-empty `name` string, {output!r} has none"
        )
        assert isinstance(getattr(output, "accepts_protected", None), bool), rule(
            6, f"{output.name}: `accepts_protected` must be True or False"
        )
        for method in ("publish", "retract"):
            assert callable(getattr(output, method, None)), f"{output.name} has no {method}()"
        if self.inventory_required:
            assert callable(getattr(output, "inventory", None)), (
                f"{output.name} has no inventory(), which this test class requires"
            )

    # -- rule 1 ------------------------------------------------------------------------------

    def test_rule_1_a_publish_makes_its_revision_held(self, output: Output) -> None:
        life = Lifecycle("one")
        deliver(output, life.published(1))
        held = _held(output, 1)
        assert held.get(life.id) == 1, rule(1, f"after publishing revision 1, inventory {held}")

    def test_rule_1_the_same_publish_twice_changes_nothing(
        self, output: Output, request: pytest.FixtureRequest
    ) -> None:
        life = Lifecycle("twice")
        first = life.published(1)
        deliver(output, first)
        held, text = _held(output, 1), _text(request, life.id)
        deliver(output, first)  # a redelivery: the same delivery id, the same content
        assert _held(output, 1) == held, rule(1, "a second identical publish changed inventory")
        assert _text(request, life.id) == text, rule(1, "a second identical publish changed it")

    # -- rule 2 ------------------------------------------------------------------------------

    def test_rule_2_a_newer_revision_replaces(
        self, output: Output, request: pytest.FixtureRequest
    ) -> None:
        life = Lifecycle("newer", title="First title")
        deliver(output, life.published(1))
        deliver(output, life.updated(2, title="Second title"))
        held = _held(output, 2)
        assert held.get(life.id) == 2, rule(2, f"after updating to revision 2, inventory {held}")
        text = _text(request, life.id)
        if text is not None:
            assert "Second title" in text and "First title" not in text, rule(
                2, f"the content was not replaced: {text[:300]!r}"
            )
        deliver(output, life.published(3))
        assert _held(output, 2).get(life.id) == 3, rule(2, "a published of revision 3 was lost")

    # -- rule 3 ------------------------------------------------------------------------------

    def test_rule_3_retract_removes(self, output: Output) -> None:
        life = Lifecycle("removed")
        deliver(output, life.published(1), life.retracted())
        held = _held(output, 3)
        assert life.id not in held, rule(3, f"{life.id} is still held after its retraction")

    def test_rule_3_retract_twice_is_harmless(self, output: Output) -> None:
        life = Lifecycle("twice-gone")
        deliver(output, life.published(1))
        gone = life.retracted()
        deliver(output, gone)
        _no_error(3, "a second retraction", lambda: deliver(output, gone))
        _no_error(3, "another retraction", lambda: deliver(output, life.retracted()))
        assert life.id not in _held(output, 3), rule(3, "the record came back")

    def test_rule_3_retract_of_a_record_never_held_is_harmless(self, output: Output) -> None:
        life = Lifecycle("never-held")
        _no_error(3, "retracting a record it never had", lambda: deliver(output, life.retracted(1)))
        inventory = getattr(output, "inventory", None)
        if inventory is not None:
            assert life.id not in inventory(), rule(3, "a retraction made the record appear")

    # -- rule 4 ------------------------------------------------------------------------------

    def test_rule_4_an_older_publish_changes_nothing(
        self, output: Output, request: pytest.FixtureRequest
    ) -> None:
        life = Lifecycle("older", title="Old title")
        first = life.published(1)
        second = life.updated(2, title="Older title")
        deliver(output, first, second, life.updated(3, title="Newest title"))
        deliver(output, second, first)  # late retries, newest first and oldest last
        held = _held(output, 4)
        assert held.get(life.id) == 3, rule(4, f"late retries of revisions 2 and 1 left {held}")
        text = _text(request, life.id)
        if text is not None:
            assert "Newest title" in text, rule(4, f"a late retry overwrote it: {text[:300]!r}")

    def test_rule_4_an_older_retraction_changes_nothing(self, output: Output) -> None:
        life = Lifecycle("older-retraction")
        deliver(output, life.published(1), life.updated(2))
        deliver(output, life.retracted(1))
        held = _held(output, 4)
        assert held.get(life.id) == 2, rule(
            4, f"a retraction at revision 1 took revision 2 away: {held}"
        )

    def test_rule_4_nothing_comes_back_after_a_retraction(self, output: Output) -> None:
        life = Lifecycle("resurrected")
        first = life.published(1)
        second = life.updated(2)
        deliver(output, first, second, life.retracted())  # a DELETE: retracted at revision 2
        deliver(output, second)  # a late retry of the revision that was retracted
        held = _held(output, 4)
        assert life.id not in held, rule(
            4, "a late publish of the retracted revision 2 brought the record back"
        )
        deliver(output, first)
        assert life.id not in _held(output, 4), rule(
            4, "a late publish of revision 1 brought a retracted record back"
        )

    def test_rule_4_a_newer_revision_publishes_again(self, output: Output) -> None:
        life = Lifecycle("back")
        deliver(output, life.published(1), life.retracted(), life.published(2))
        held = _held(output, 4)
        assert held.get(life.id) == 2, rule(4, f"re-publishing at revision 2 left {held}")

    # -- rule 5 ------------------------------------------------------------------------------

    def test_rule_5_deliver_many_gives_one_outcome_per_item(self, output: Output) -> None:
        a, b, c = Lifecycle("batch-a"), Lifecycle("batch-b"), Lifecycle("batch-c")
        items = [a.published(1), b.published(1), a.updated(2), b.retracted(), c.retracted(1)]
        outcomes = _batch(output, items)
        assert outcomes == [None] * len(items), rule(5, f"outcomes {outcomes!r}, all None expected")
        inventory = getattr(output, "inventory", None)
        if inventory is not None:
            held = dict(inventory())
            assert held.get(a.id) == 2 and b.id not in held and c.id not in held, rule(
                5, f"the batch was not applied in order: {held}"
            )

    def test_rule_5_a_batch_follows_the_same_rules(self, output: Output) -> None:
        life = Lifecycle("batch-rules")
        first, second = life.published(1), life.updated(2)
        outcomes = _batch(output, [second, first, life.retracted(), second, first])
        assert all(outcome is None for outcome in outcomes), rule(5, f"outcomes {outcomes!r}")
        held = _held(output, 5)
        assert life.id not in held, rule(
            4, f"within one deliver_many, late items brought a retracted record back: {held}"
        )

    def test_rule_5_one_failing_item_fails_only_itself(
        self, output: Output, request: pytest.FixtureRequest
    ) -> None:
        refused = optional_fixture(
            request, "refused_record", "one failing item of a batch cannot be made"
        )
        a, b = Lifecycle("around-a"), Lifecycle("around-b")
        items = [a.published(1), (refused, make_event(refused)), b.published(1)]
        outcomes = _batch(output, items)
        assert outcomes[0] is None and outcomes[2] is None, rule(
            5, f"one refused item failed others: {outcomes!r}"
        )
        assert isinstance(outcomes[1], BaseException), rule(
            5, f"the refused item's outcome is {outcomes[1]!r}, an exception expected"
        )

    # -- rule 6 ------------------------------------------------------------------------------

    def test_rule_6_a_record_is_delivered_as_its_clearance_allows(
        self, output: Output, request: pytest.FixtureRequest
    ) -> None:
        """As the core hands it: protected fields if the output accepts them, else none at
        all, even for a record whose envelope was opened."""
        marker = "contract-protected-7f3c"
        life = Lifecycle("protected")
        life.protected = {"note": marker} if output.accepts_protected else None
        record, event = life.published(1)
        if not output.accepts_protected:
            record = replace(record, secured_status="decrypted")
        _no_error(
            6,
            "delivering a record as its clearance allows",
            lambda: deliver(output, (record, event)),
        )
        inventory = getattr(output, "inventory", None)
        if inventory is not None:
            assert inventory().get(record.id) == 1, rule(6, "the record was not delivered")
        text = _text(request, record.id)
        if text is not None and not output.accepts_protected:
            assert marker not in text and "secured" not in text.lower(), rule(
                6, f"{output.name} does not accept protected data but holds some: {text[:300]!r}"
            )

    # -- failures ----------------------------------------------------------------------------

    def test_a_permanent_failure_is_a_permanent_delivery_error(
        self, request: pytest.FixtureRequest
    ) -> None:
        failing = optional_fixture(
            request, "failing_output", "how this output reports a permanent failure is unchecked"
        )
        item = Lifecycle("failing").published(1)
        if hasattr(failing, "deliver_many"):
            (outcome,) = deliver_many(failing, [item])
        else:
            outcome = _raised(lambda: deliver(failing, item))
        assert isinstance(outcome, DeliveryError), rule(
            7, f"the failure is {outcome!r}, not a DeliveryError"
        )
        assert outcome.permanent, rule(7, f"{outcome!r} is not permanent=True: it would be retried")


def _held(output: Output, number: int) -> dict[str, int]:
    """``output.inventory()`` checked in shape, or a skip for an output without one."""
    inventory = getattr(output, "inventory", None)
    if inventory is None:
        pytest.skip(
            f"rule {number} is observed through inventory(), and {output.name} has none "
            "(see docs/plugins.md: an output without inventory)"
        )
    held = inventory()
    assert isinstance(held, Mapping), f"inventory() returned {type(held).__name__}, not a mapping"
    assert all(isinstance(v, int) for v in held.values()), f"inventory() revisions: {held}"
    return dict(held)


def _text(request: pytest.FixtureRequest, record_id: str) -> str | None:
    """What the module's ``read_back`` fixture says the output holds, if it has one."""
    try:
        read_back: Callable[[str], str] = request.getfixturevalue("read_back")
    except pytest.FixtureLookupError:
        return None
    return read_back(record_id)


def _batch(output: Output, items: list[Item]) -> list[BaseException | None]:
    if not callable(getattr(output, "deliver_many", None)):
        pytest.skip(f"{output.name} has no deliver_many(): the core calls it item by item")
    try:
        return deliver_many(output, items)
    except AssertionError as exc:
        raise AssertionError(rule(5, str(exc))) from None


def _no_error(number: int, what: str, call: Callable[[], None]) -> None:
    error = _raised(call)
    assert error is None, rule(number, f"{what} raised {error!r}")


def _raised(call: Callable[[], None]) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the kit reports what was raised
        return exc
    return None
