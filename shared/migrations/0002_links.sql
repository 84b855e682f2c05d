-- The Lighthouse read model: live links (a deleted link's row is removed) and their usage sessions.
CREATE TABLE links (
    link_id integer PRIMARY KEY,
    name text NOT NULL,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

-- One row per usage: uses of a link by a user, each within an hour of the one before.
CREATE TABLE link_usage_sessions (
    link_id integer NOT NULL REFERENCES links (link_id) ON DELETE CASCADE,
    user_name text NOT NULL,
    started_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    -- Whole seconds from started_at to last_at: what GET shows, and what the statistics add up.
    duration bigint NOT NULL CHECK (duration >= 0),
    PRIMARY KEY (link_id, user_name, started_at)
);

-- GET /api/links/:id/usage and the statistics read one link's sessions oldest first.
CREATE INDEX link_usage_sessions_by_start ON link_usage_sessions (link_id, started_at, user_name);
