"""The management HTTP API (RabbitMQ's shapes) and the Prometheus ``/metrics`` endpoint.

Sits at the server level: ``syncmq.server`` builds a :class:`~.state.Context` (the broker, a
function listing the open sessions, node facts) and starts a :class:`~.httpd.ManagementServer`,
waitress (a WSGI server) with its I/O thread ``syncmq-management`` and a pool of request
threads.

- ``state.py``: read-only snapshots of the broker for monitoring, message counters and rates.
- ``api.py``: request routing and authorisation, visibility, listings, counters.
- ``resources/``: the endpoints, one module per resource (queues, exchanges, publish, ...).
- ``view.py``: the read-only view of connections, channels and queues the endpoints use.
- ``common.py``, ``errors.py``, ``validate.py``: shared shapes, RabbitMQ's error shape, body
  checks.
- ``definitions.py``, ``definitions_import.py``: RabbitMQ's definitions JSON: export, and an
  import checked whole before it is applied.
- ``metrics.py``: the Prometheus endpoints (``prometheus_client`` renders them), renderings
  shared between concurrent scrapes; ``prometheus.py``: RabbitMQ's families read off the
  broker; ``prom_families.py``: their names, types, help texts and labels (data).
- ``wsgi.py``: the WSGI application: the gate (auth, body limits) before any body byte,
  JSON decoding and the error shape, the dashboard's files, ``/metrics``.
- ``httpd.py``: waitress, with the gate, timeouts and accept back-off hooked in.

Reading broker state from the management thread: monitoring snapshots read sessions,
channels and queues without their locks (copying each dict with ``list(...)`` first); every
change (declare, delete, purge, close) goes through the methods the AMQP handlers use, and
work that belongs to a connection runs on that connection's worker.
"""

from .httpd import HTTPSettings, ManagementServer
from .state import Context
from .wsgi import App, MetricsOnly

__all__ = ["App", "Context", "HTTPSettings", "ManagementServer", "MetricsOnly"]
