-- Read models made for the dashboard's charts, folded by the heartbeat projection from event time.
-- Beats per device per minute (UTC), kept for a day of event time: the last hour's chart.
CREATE TABLE heartbeat_beats_minute (
    device_id integer NOT NULL,
    minute timestamptz NOT NULL,
    beats bigint NOT NULL CHECK (beats > 0),
    PRIMARY KEY (device_id, minute)
);
CREATE INDEX heartbeat_beats_minute_by_minute ON heartbeat_beats_minute (minute);
-- Beats per device per hour (UTC), kept for eight days of event time: the last day's chart.
CREATE TABLE heartbeat_beats_hour (
    device_id integer NOT NULL,
    hour timestamptz NOT NULL,
    beats bigint NOT NULL CHECK (beats > 0),
    PRIMARY KEY (device_id, hour)
);
CREATE INDEX heartbeat_beats_hour_by_hour ON heartbeat_beats_hour (hour);
-- Each device's longest gap between two of its own beats, and when that gap ended.
ALTER TABLE heartbeat_devices ADD COLUMN longest_absence_us bigint NOT NULL DEFAULT 0;
ALTER TABLE heartbeat_devices ADD COLUMN longest_absence_ended timestamptz;
-- The metering panel reads the last day's quarter hours of every org: by time, not by org first.
CREATE INDEX api_call_counts_by_bucket ON api_call_counts (bucket);
-- Usages per status and platform, kept by the media projection beside media_usages (equal to a
-- count of it at every commit): the media panel reads this, not the usages.
CREATE TABLE media_usage_counts (
    status text NOT NULL,
    platform text NOT NULL,
    -- No CHECK: a batch's decrease is proposed as a negative row before it meets the stored one (a
    -- check would refuse it there); counts that reach zero are deleted.
    usages bigint NOT NULL,
    PRIMARY KEY (status, platform)
);
