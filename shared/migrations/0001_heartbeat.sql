-- Where each projection has got to in the event stream; written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    projection text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0
);

-- Idempotency keys outlive JetStream's 2-minute duplicate window here.
CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    stream_seq bigint NOT NULL,
    event_type text NOT NULL
);

CREATE TABLE installation (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    set_up_at timestamptz NOT NULL
);

CREATE TABLE heartbeat_devices (
    device_id integer PRIMARY KEY,
    name text NOT NULL,
    registered_at timestamptz NOT NULL,
    last_beat timestamptz,
    num_beats bigint NOT NULL DEFAULT 0
);

-- One row: the whole-installation beat statistics.
CREATE TABLE heartbeat_stats (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    total_beats bigint NOT NULL DEFAULT 0,
    last_beat timestamptz,
    longest_absence_us bigint NOT NULL DEFAULT 0,
    num_visits bigint NOT NULL DEFAULT 0
);
