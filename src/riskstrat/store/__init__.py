"""The serving store: the only package that talks to the serving database (SQLAlchemy).

:class:`Store` owns the engine and exposes one repository per aggregate (``store.runs``,
``store.scores``, ``store.cohorts``, ``store.outcomes``, ``store.audit``, ``store.users``,
``store.marks``).
The modules: ``schema`` (tables), ``engine`` (opening, migrations), ``records`` (the values
handed out, and row conversion), ``paging`` (ranked-list pages), one module per repository,
``facade`` (:class:`Store`).

A monthly run is published in two phases so readers never see half of one (``runs``).
``access_log`` records every patient-level read, with NHS numbers pseudonymised by a keyed
hash (``audit``). A run's people are identified by NHS numbers or, when its extract says so
(contract version 2's ``identifier_kind``), by pseudonyms such as an OMOP ``person_id``. The
``nhs_number`` columns keep their name for compatibility and hold either; the run says which
(``RunInfo.identifier_kind``), and so does every access record.
"""

from riskstrat.store.engine import StoreSchemaError
from riskstrat.store.facade import Store
from riskstrat.store.runs import RunInProgressError

__all__ = ["RunInProgressError", "Store", "StoreSchemaError"]
