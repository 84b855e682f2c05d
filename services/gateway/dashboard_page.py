"""The dashboard's HTML, rendered from a ``Board`` and the statistics document: every number is in
the page, so it reads without JavaScript; the page's script only keeps it live."""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from services.gateway.charts import bar_chart, series_of
from services.gateway.dashboard_read import (
    DAY,
    HOUR,
    LINK_DAYS,
    MAX_DEVICES,
    MINUTE,
    Board,
    DeviceBoard,
    LinkBoard,
    MeteredBoard,
)
from services.gateway.durations import ago, human_duration
from services.projector.beat_counts import hour_of, minute_of

# A device is online when its last beat is at most this old (docs/api.md, "The dashboard").
ONLINE_WITHIN = timedelta(minutes=5)

e = html.escape


def is_online(last_beat: datetime | None, now: datetime) -> bool:
    return last_beat is not None and now - last_beat <= ONLINE_WITHIN


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(later: datetime, earlier: datetime) -> int:
    return max(0, int((later - earlier).total_seconds()))


def _time(at: datetime | None, now: datetime, cls: str = "ago") -> str:
    """``at`` as "2 min ago", with the exact time as its machine-readable value and tooltip."""
    if at is None:
        return f'<span class="{cls}">never</span>'
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'<time class="{cls}" datetime="{stamp}" data-ts="{int(at.timestamp())}" title="{_iso(at)}">'
        f"{ago(_seconds(now, at))}</time>"
    )


def _status(online: bool) -> str:
    word = "online" if online else "offline"
    return f'<span class="status {word}"><span class="dot" aria-hidden="true"></span>{word}</span>'


def _table(
    caption: str, head: Iterable[str], rows: Iterable[str], table_id: str = "", extra: str = ""
) -> str:
    cols = "".join(f'<th scope="col">{h}</th>' for h in head)
    attr = (f' id="{table_id}"' if table_id else "") + extra
    return (
        f"<table{attr}><caption>{caption}</caption><thead><tr>{cols}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _route(path: str, text: str | None = None) -> str:
    return f'<a href="{e(path)}"><code>{e(text or "GET " + path)}</code></a>'


def _device_row(d: DeviceBoard, now: datetime) -> str:
    minutes = series_of(d.per_minute, minute_of(now), MINUTE, 60)
    hours = series_of(d.per_hour, hour_of(now), HOUR, 24)
    name = e(d.name)
    return (
        f'<tr data-id="{d.id}"><th scope="row">{name}</th>'
        f"<td>{_status(is_online(d.last_beat, now))}</td>"
        f"<td>{_time(d.last_beat, now)}</td>"
        f'<td class="num beats">{d.num_beats}</td>'
        f'<td class="num">{human_duration(d.longest_absence_us // 1_000_000)}</td>'
        f"<td>{bar_chart(f'bpm-{d.id}', f'Beats per minute of {d.name}, last hour', minutes, 'beats')}</td>"
        f"<td>{bar_chart(f'bph-{d.id}', f'Beats per hour of {d.name}, last day', hours, 'beats')}</td></tr>"
    )


def _empty_heartbeat(base: str) -> str:
    return (
        '<div class="empty" id="no-devices"><p><strong>No device yet.</strong> Register one, then let it '
        "beat (the token is shown once, keep it):</p><pre><code>"
        + e(
            "usagehub devices add Laptop\n"
            "# or over HTTP, with the admin secret (USAGEHUB_SECRET_KEY):\n"
            'curl -s -X POST -H "Authorization: $USAGEHUB_SECRET_KEY"'
            f' -d \'{{"name": "Laptop"}}\' {base}/api/devices\n'
            "# then, with TOKEN set to the token in the answer, as often as the device likes:\n"
            f'curl -s -X POST -H "Authorization: $TOKEN" {base}/api/beat'
        )
        + "</code></pre><p>The device shows up here at once; keep this page open to watch it.</p></div>"
    )


def heartbeat_panel(board: Board, view: dict[str, Any], base: str) -> str:
    now = board.now
    last = None if view["last_seen"] is None else datetime.fromtimestamp(view["last_seen"], UTC)
    items = [
        ("Last beat", f'<dd id="last_seen">{_time(last, now)}</dd>'),
        (
            "Longest absence",
            f'<dd id="longest_absence">{human_duration(view["longest_absence"])}</dd>',
        ),
        ("Total beats", f'<dd id="total_beats">{view["total_beats"]}</dd>'),
        ("Visits", f'<dd id="num_visits">{view["num_visits"]}</dd>'),
        ("Up for", f'<dd id="uptime">{human_duration(view["uptime"])}</dd>'),
    ]
    # Each term with its value in a <div>: one grid cell per figure.
    summary = '<dl class="summary">' + "".join(f"<div><dt>{t}</dt>{d}</div>" for t, d in items) + "</dl>"
    threshold = human_duration(int(ONLINE_WITHIN.total_seconds()))
    more = board.device_count - len(board.devices)
    caption = f"Devices, latest beat first (online: a beat within the last {threshold})"
    if more > 0:
        caption += f"; {more} more not shown"
    # The table is there even when empty: the live script adds the devices registered meanwhile.
    devices = _table(
        caption,
        [
            "Device",
            "Status",
            "Last beat",
            "Beats",
            "Longest absence",
            "Per minute, last hour",
            "Per hour, last day",
        ],
        (_device_row(d, now) for d in board.devices),
        "devices",
        f' data-max="{MAX_DEVICES}"',
    )
    if not board.devices:
        devices = _empty_heartbeat(base) + devices
    # The devices shown whose longest absence is a second or more, longest first.
    absent = [d for d in board.devices if d.longest_absence_us >= 1_000_000]
    absent = sorted(absent, key=lambda d: -d.longest_absence_us)[:5]
    absences = ""
    if absent:
        absences = (
            '<h3>Longest absences</h3><ol class="absences">'
            + "".join(
                f"<li><strong>{human_duration(d.longest_absence_us // 1_000_000)}</strong> {e(d.name)}, "
                f"until {e(_iso(d.longest_absence_ended))}</li>"
                for d in absent
            )
            + "</ol>"
        )
    return (
        '<section id="heartbeat" aria-labelledby="heartbeat-h"><h2 id="heartbeat-h">Heartbeat</h2>'
        f"{summary}{devices}{absences}"
        f'<p class="api">Served by {_route("/api/stats")} and, once a second, the WebSocket '
        "<code>/api/stats/ws</code>.</p></section>"
    )


def _link_row(link: LinkBoard, days: list[datetime]) -> str:
    usages = [link.per_day.get(d, (0, 0))[0] for d in days]
    hours = [link.per_day.get(d, (0, 0))[1] for d in days]
    name = e(link.name)
    chart = bar_chart(
        f"link-{link.id}",
        f"Usages of {link.name} per day, last {LINK_DAYS} days",
        series_of({d: u for d, u in zip(days, usages, strict=True)}, days[-1], DAY, len(days)),
        "usages",
    )
    per_day = " · ".join(f"{u}" for u in usages)
    users = ", ".join(f"{e(u)} ({n}, {human_duration(s)})" for u, n, s in link.top_users) or "none yet"
    return (
        f'<tr><th scope="row">{name}</th><td>{chart}<div class="small">usages per day: {per_day}</div></td>'
        f'<td class="small">{" · ".join(f"{s / 3600:.1f}" for s in hours)}</td><td>{users}</td>'
        f"<td>{_route(f'/api/links/{link.id}/stats', 'stats')}"
        f" {_route(f'/api/links/{link.id}/usage', 'usage')}</td></tr>"
    )


def links_panel(board: Board, base: str) -> str:
    today = hour_of(board.now).replace(hour=0)
    days = [today - DAY * (LINK_DAYS - 1 - i) for i in range(LINK_DAYS)]
    if not board.links:
        body = (
            '<div class="empty"><p><strong>No link yet.</strong> Create one, then post a use of it '
            "(its id is in the answer):</p><pre><code>"
            + e(
                "usagehub links add Docs https://example.org\n"
                f"curl -s --data 'user=ada' {base}/api/links/1/usage"
            )
            + "</code></pre></div>"
        )
    else:
        more = board.link_count - len(board.links)
        caption = f"Newest links, their last {LINK_DAYS} days (UTC), oldest day first"
        if more > 0:
            caption += f"; {more} more in {_route('/api/links')}"
        body = _table(
            caption,
            ["Link", "Usages per day", "Hours of use per day", "Top users (usages, time)", "API"],
            (_link_row(link, days) for link in board.links),
        )
    return (
        '<section id="links" aria-labelledby="links-h"><h2 id="links-h">Lighthouse links</h2>'
        f'{body}<p class="api">Served by {_route("/api/links")}, <code>GET /api/links/:id/usage</code> '
        "and <code>GET /api/links/:id/stats</code>.</p></section>"
    )


def media_panel(board: Board) -> str:
    if not board.media:
        body = (
            '<p class="empty">No media usage reported yet (<code>POST /usages/digital</code> and others).</p>'
        )
    else:
        body = _table(
            "Usages by status and platform",
            ["Status", "Platform", "Usages"],
            (f'<tr><td>{e(s)}</td><td>{e(p)}</td><td class="num">{n}</td></tr>' for s, p, n in board.media),
        )
    examples = " ".join(_route(f"/usages/media/{quote(m, safe='')}", m) for m in board.media_ids)
    return (
        '<section id="media" aria-labelledby="media-h"><h2 id="media-h">Media usage</h2>'
        f'{body}<p class="api">Served by <code>GET /usages/media/:mediaId</code>'
        f"{': ' + examples if examples else ''}.</p></section>"
    )


def _metered_row(m: MeteredBoard, now: datetime) -> str:
    series = series_of(m.per_hour, hour_of(now), HOUR, 24)
    chart = bar_chart(
        f"calls-{quote(m.org_id, safe='')}-{quote(m.service, safe='')}".replace("%", "_"),
        f"Calls of {m.org_name} to {m.service} per hour, last day",
        series,
        "calls",
    )
    return (
        f'<tr><td>{e(m.org_name)}</td><td>{e(m.service)}</td><td class="num">{sum(series.values)}</td>'
        f"<td>{chart}</td><td>{_route('/api/orgs/' + quote(m.org_id, safe=''), 'org')}</td></tr>"
    )


def metering_panel(board: Board) -> str:
    if not board.metered:
        body = (
            '<p class="empty">No API call metered in the last day'
            " (<code>POST /api</code> with an org key).</p>"
        )
    else:
        body = _table(
            "Calls per org and service, last 24 hours (UTC), busiest first",
            ["Org", "Service", "Calls", "Per hour", "API"],
            (_metered_row(m, board.now) for m in board.metered),
        )
    return (
        '<section id="metering" aria-labelledby="metering-h"><h2 id="metering-h">API metering</h2>'
        f'{body}<p class="api">Served by <code>GET /api/usage/history</code> (an org key), '
        f"{_route('/api/orgs')} (admin) and TR50 <code>usage.api.history</code>.</p></section>"
    )


def _sums(caption: str, what: str, rows: list[tuple[str, int, int]]) -> str:
    return _table(
        caption,
        [what, "Commits", "Lines of code"],
        (f'<tr><td>{e(n)}</td><td class="num">{c}</td><td class="num">{loc}</td></tr>' for n, c, loc in rows),
    )


def contributions_panel(board: Board) -> str:
    if not board.modules and not board.companies:
        body = (
            '<p class="empty">No contribution yet'
            " (<code>usagehub import git PATH --module NAME</code> imports a repository).</p>"
        )
    else:
        body = _sums("Top modules by commits", "Module", board.modules) + _sums(
            "Top companies by commits", "Company", board.companies
        )
    return (
        '<section id="contributions" aria-labelledby="contributions-h">'
        '<h2 id="contributions-h">Contributions</h2>'
        f'{body}<p class="api">Served by {_route("/api/1.0/stats/modules")} and '
        f"{_route('/api/1.0/stats/companies')}.</p></section>"
    )


# The panels the page refreshes from ``GET /dashboard/panels`` (the heartbeat one is live from the
# WebSocket feed instead), in page order; each is a ``<section>`` whose id is its name.
LIVE_PANELS = ("links", "media", "metering", "contributions")


def live_panels(board: Board, base: str) -> str:
    """The four panels after the heartbeat one: in the page, and alone as its refresh fragment."""
    return "".join(
        [links_panel(board, base), media_panel(board), metering_panel(board), contributions_panel(board)]
    )


def dashboard_body(board: Board, view: dict[str, Any], base: str) -> str:
    return heartbeat_panel(board, view, base) + live_panels(board, base)


def panels_etag(fragment: str) -> str:
    """A strong ETag of the fragment's bytes: an unchanged fragment answers 304, not the panels."""
    return '"' + hashlib.sha256(fragment.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 says for it)."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)
