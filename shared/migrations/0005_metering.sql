-- The metering read models: "metering" (orgs, principals, keys, sessions) and "api_calls" (counters).

CREATE TABLE metering_orgs (
    org_id text PRIMARY KEY,
    name text NOT NULL,
    time_zone text NOT NULL,
    parent_id text,
    -- The org's chain from its root down to itself: the subtree of X is every org whose chain holds X.
    ancestors text[] NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX metering_orgs_by_ancestor ON metering_orgs USING gin (ancestors);

CREATE TABLE metering_principals (
    principal_id text PRIMARY KEY,
    super_ops boolean NOT NULL,
    created_at timestamptz NOT NULL
);

-- Keys are stored as SHA-256 only; a revoked key stays (with revoked_at) so its id is never reused.
CREATE TABLE metering_keys (
    key_id text PRIMARY KEY,
    org_id text NOT NULL,
    principal_id text,
    name text NOT NULL DEFAULT '',
    key_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX metering_keys_by_org ON metering_keys (org_id, created_at, key_id);

-- Sessions by the SHA-256 of their id; a session ends at expires_at or when its key is revoked.
CREATE TABLE metering_sessions (
    session_hash text PRIMARY KEY,
    key_id text NOT NULL,
    org_id text NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX metering_sessions_by_expiry ON metering_sessions (expires_at);

-- One row: the latest session start folded so far. Sessions that expired before it are removed, so
-- the table stays small, and a rebuild removes exactly the same ones (it uses event time only).
CREATE TABLE metering_session_clock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    latest timestamptz NOT NULL
);

-- The api_calls projection keeps its own copy of the org tree: a projection reads only its own rows.
CREATE TABLE api_call_orgs (
    org_id text PRIMARY KEY,
    -- Root first, the org itself last, with each one's time zone at the same position.
    ancestors text[] NOT NULL,
    ancestor_zones text[] NOT NULL
);

-- Calls per org, service and quarter hour (UTC): local hours start on the quarter hour in every zone
-- in use (India +05:30, Nepal +05:45), which whole UTC hours could not align to.
CREATE TABLE api_call_counts (
    org_id text NOT NULL,
    bucket timestamptz NOT NULL,
    service text NOT NULL,
    calls bigint NOT NULL CHECK (calls > 0),
    PRIMARY KEY (org_id, bucket, service)
);

-- An org's own calls per local day, in its own zone and in each of its ancestors' zones: a day series
-- of any org's subtree reads these, not every quarter hour of a year.
CREATE TABLE api_call_days (
    zone text NOT NULL,
    org_id text NOT NULL,
    day date NOT NULL,
    service text NOT NULL,
    calls bigint NOT NULL CHECK (calls > 0),
    PRIMARY KEY (zone, org_id, day, service)
);

-- Calls of an org and its whole subtree per local day in the org's zone: includeSubOrgs in one read.
CREATE TABLE api_call_subtree_days (
    org_id text NOT NULL,
    day date NOT NULL,
    service text NOT NULL,
    calls bigint NOT NULL CHECK (calls > 0),
    PRIMARY KEY (org_id, day, service)
);
