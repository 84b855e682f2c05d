"""The contract of the dashboard: the page at ``/``, its icon, and the fragment of its live panels."""

from __future__ import annotations

from services.gateway.contract import Answer, Operation, Param

TAG = "dashboard"
_ETAG = ("ETag", "Cache-Control")

OPERATIONS = (
    Operation(
        "get",
        "/",
        "dashboard",
        "The dashboard (HTML, every number without JavaScript; live over /api/stats/ws with it)",
        TAG,
        (Answer(200, "the page", str, ("text/html",)),),
        description="The heartbeat document's status page: a view that starts a visitor's session is"
        " a visit (a cookie names the visitor).",
    ),
    Operation(
        "get",
        "/favicon.svg",
        "favicon",
        "The dashboard's icon",
        TAG,
        (Answer(200, "the icon", str, ("image/svg+xml",), headers=("Cache-Control",)),),
    ),
    Operation(
        "get",
        "/dashboard/panels",
        "dashboardPanels",
        "The dashboard's panels after the heartbeat one, as the page renders them (its script swaps"
        " them in); never a visit",
        TAG,
        (
            Answer(200, "the panels' HTML", str, ("text/html",), headers=_ETAG),
            Answer(304, "the panels are those the ETag names", None, headers=_ETAG),
        ),
        parameters=(Param("If-None-Match", "header", str, "the ETag of the panels the page has"),),
    ),
)
