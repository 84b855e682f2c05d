-- Events a projection could not decode or apply: set aside with the reason, never fatal. Rows are
-- part of the projection (a rebuild deletes and recreates them), so they hold no wall-clock time.
CREATE TABLE projection_quarantine (
    projection text NOT NULL,
    stream_seq bigint NOT NULL,
    subject text NOT NULL,
    reason text NOT NULL,
    data_sha256 text NOT NULL,
    -- The message as stored, up to 64 KiB (the stream keeps it whole: deny_delete).
    data bytea NOT NULL,
    PRIMARY KEY (projection, stream_seq)
);
