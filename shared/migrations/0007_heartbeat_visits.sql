-- Each visitor's latest visit (a PageVisited's event time), by the visitor's hash: a visit is counted
-- only when the same visitor's previous one is more than 30 minutes older. Rows a day older than the
-- newest visit are pruned, as they can no longer change a count.
CREATE TABLE heartbeat_visitors (
    visitor text PRIMARY KEY,
    last_visit timestamptz NOT NULL
);
CREATE INDEX heartbeat_visitors_last_visit ON heartbeat_visitors (last_visit);
