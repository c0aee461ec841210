"""The "Spot instance" extra link per try, on the api-server.

Airflow 3.3 asks for a task's extra links with the try being viewed: the UI's try selector puts
``try_number`` in the page's address, its extra-links box passes it to
``GET .../taskInstances/{task_id}/links?try_number=N``, and the route
(``airflow/api_fastapi/core_api/routes/public/extra_links.py``) hands the link the key of that try's
``TaskInstanceHistory`` row (try number included). A link the operator declares is deserialized
there as a ``XComOperatorLink``, which reads the task instance's XCom (XComs have no try, and a new
try clears them), so by itself it shows the newest try's instance on every try. A link a plugin
registers for the operator class replaces the declared one of the same name
(``airflow/serialization/serialized_objects.py``, "Links via Plugin have higher precedence") and
is called with that key: this one. The current try's instance comes from the link's XCom (as
before); an older try's from the run's ledger (the session that try ran), read once and kept.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from airflow_grid_resume.links import LINK_CONF, GridArtifactsLink, GridInstanceLink, instance_url

log = logging.getLogger(__name__)
# (task instance id, try number) -> instance id of that finished try (None: it launched none)
_PAST_TRIES: OrderedDict[tuple, str | None] = OrderedDict()
PAST_TRIES_KEPT = 2048


class TryInstanceLink(GridInstanceLink):
    """The instance of the try being viewed (registered by the plugin for ``GridRunOperator``)."""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            return try_instance_link(
                ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index, getattr(ti_key, "try_number", None)
            )
        except Exception:  # a link that cannot be resolved is shown disabled, never an error page
            log.exception("could not resolve the Spot instance link of %s", ti_key)
            return ""


def try_instance_link(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int | None) -> str:
    """The link to the instance try ``try_number`` ran on ("" when there is none or it is unknown)."""
    from airflow.utils.session import create_session

    from airflow_grid_resume.ui import model, source

    with create_session() as session:
        ti = source.task_instance(session, dag_id, run_id, task_id, map_index)
        if ti is None:
            return ""
        current = source.xcom(session, ti, GridInstanceLink.key) or {}
        if try_number is None or int(try_number) == int(ti.try_number or 0):
            return GridInstanceLink().format_link(**current) if current.get("instance_id") else ""
        conf = {k: v for k, v in (source.xcom(session, ti, GridArtifactsLink.key) or {}).items() if k in LINK_CONF}
        conf.update({k: v for k, v in current.items() if k in LINK_CONF})
        key = (str(ti.id), int(try_number))  # a run deleted and made again has new task instance ids
        pointer = tries = None
        if key not in _PAST_TRIES:
            pointer, tries = source.run_pointer(session, ti), source.tries(session, ti)
    if key not in _PAST_TRIES:
        if pointer is None:  # the current try has not said where its run is yet
            return ""
        docs = source.read_ledger_docs(source.open_ledger(pointer), max_manifests=0)
        _PAST_TRIES[key] = model.try_instance(docs, tries or [], int(try_number), now=time.time())
        while len(_PAST_TRIES) > PAST_TRIES_KEPT:
            _PAST_TRIES.popitem(last=False)
    instance_id = _PAST_TRIES[key]
    return instance_url(conf, instance_id) or ""
