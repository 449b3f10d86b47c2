"""Tools for plugin authors' tests (docs/plugins.md, "Test it").

- :class:`OutputContract`: subclass it with an ``output`` fixture, and the output is checked
  against every rule of the output contract, one test method per rule.
- :func:`load_outputs`: the outputs one plugin registers, loaded in isolation.
- :class:`Lifecycle`, :func:`make_record`, :func:`make_event`: records and events with the
  revision, delivery id and event time under the test's control; :func:`deliver` hands them
  over as the core would.
- :class:`PluginApp` / :func:`plugin_app`: the plugin inside a real app, records in over the
  API, deliveries run as a worker runs them, broadcast hooks fired through the plugins.

Importing this module collects no test: only a subclass named ``Test...`` is collected.
"""

from publisher.testing.builders import (
    Lifecycle,
    deliver,
    deliver_many,
    load_outputs,
    make_event,
    make_record,
    plugin_name,
    publish,
    retract,
)
from publisher.testing.contract import RULES, OutputContract
from publisher.testing.harness import PluginApp, drain, plugin_app

__all__ = [
    "RULES",
    "Lifecycle",
    "OutputContract",
    "PluginApp",
    "deliver",
    "deliver_many",
    "drain",
    "load_outputs",
    "make_event",
    "make_record",
    "plugin_app",
    "plugin_name",
    "publish",
    "retract",
]
