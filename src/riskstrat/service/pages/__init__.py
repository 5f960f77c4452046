"""Server-rendered pages for people who do not write code, on the same identities and roles.

Each role has a home it lands on after signing in: a care coordinator finds a patient
(``/patients``), a PCN team reads its lists (``/cohorts``), an analyst the model (``/model``),
an admin who can sign in (``/admin``). Every page that shows a patient is audited exactly like
the API; errors answer as pages in the site's layout (``errors.install``).

=====================  =====================================================================
``session``        signing in and out, the session behind every page, CSRF tokens, homes
``cohorts``        the lists, marks on them, "hide done", CSV and Excel downloads
``patients``       finding a patient, their page, marking them
``model``          the analyst's model page and the admin's home
``monitoring_charts`` the model page's monitoring charts (inline SVG, drawn on the server)
``errors``         error pages (403, 404, 422, 500, ...) for page paths
=====================  =====================================================================
"""

from __future__ import annotations

from riskstrat.service.pages import cohorts, errors, model, patients
from riskstrat.service.pages.errors import install as install_error_pages
from riskstrat.service.pages.session import COOKIE, SESSION_HOURS, SignInRequired, router

#: Every page route (the app includes it after the API's routers).
pages = router

__all__ = [
    "COOKIE",
    "SESSION_HOURS",
    "SignInRequired",
    "cohorts",
    "errors",
    "install_error_pages",
    "model",
    "pages",
    "patients",
]
