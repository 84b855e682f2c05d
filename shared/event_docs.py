"""docs/events.md, generated from the msgspec event types (``make docs``; a test keeps it current)."""

from __future__ import annotations

import json

from shared.events import EVENT_TYPES, SUBJECTS, event_schema

HEADER = """# Events

Generated from `shared/events/` by `make docs`; do not edit by hand.

Every event is a JSON object on the JetStream stream `USAGEHUB_EVENTS`, tagged by `type`, with the
common fields `event_id`, `version` (schema version of its type), `occurred_at` (when ingest
accepted it; projections read time only from here), `idempotency_key` (the client's key, scoped by
command, when one was given) and `request_id`. Types evolve only by adding fields with defaults; a
breaking change is a new `version` with an upcaster in `shared.events.UPCASTERS`.

| type | subject |
| --- | --- |
"""


def render_events_markdown() -> str:
    schema = event_schema()
    defs = schema["$defs"]
    rows = "".join(f"| `{t.__name__}` | `{SUBJECTS[t]}` |\n" for t in EVENT_TYPES)
    sections = []
    for t in EVENT_TYPES:
        doc = (t.__doc__ or "").strip()
        body = json.dumps(defs[t.__name__], indent=2)
        sections.append(f"## {t.__name__}\n\n{doc + chr(10) + chr(10) if doc else ''}```json\n{body}\n```\n")
    return HEADER + rows + "\n" + "\n".join(sections)
