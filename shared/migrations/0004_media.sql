-- The media-usage read model: every usage reported and not deleted (a status rule may hide one from a
-- read, never from here). JSON columns hold what the API shows, as text, so reads pass it through.
CREATE TABLE media_usages (
    usage_id text PRIMARY KEY,
    media_id text NOT NULL,
    grouping text NOT NULL,
    platform text NOT NULL,
    status text NOT NULL,
    usage_references json NOT NULL,
    metadata json NOT NULL,
    -- The usage as the API shows it, rendered once here so reads and notifications only splice it.
    document json NOT NULL,
    date_added timestamptz NOT NULL,
    last_modified timestamptz NOT NULL,
    date_removed timestamptz,
    -- Stream position of the event that last changed the usage.
    position bigint NOT NULL
);

-- GET /usages/media/:id reads one media's usages; a write replaces a grouping's usages.
CREATE INDEX media_usages_by_media ON media_usages (media_id);
CREATE INDEX media_usages_by_grouping ON media_usages (grouping);

-- At most one per media: its latest usage list, written with the batch that changed it and deleted
-- once published on usagehub.notify.media.<id> (so a crash in between only delays it).
CREATE TABLE media_usage_notifications (
    media_id text PRIMARY KEY,
    position bigint NOT NULL,
    document text NOT NULL
);
