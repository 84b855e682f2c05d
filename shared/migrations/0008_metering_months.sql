-- Day counters of the api_calls projection as one row per local month, each day a cell of an array:
-- a year of daily history for twenty orgs reads about 1,300 rows (org, service, month), not 38,000
-- (org, service, day). Replaces api_call_days and api_call_subtree_days, whose rows it takes over.

-- An org's own calls per local day, in its own zone and in each of its ancestors' zones.
CREATE TABLE api_call_months (
    zone text NOT NULL,
    org_id text NOT NULL,
    -- The first day of a month of ``zone``'s calendar.
    month date NOT NULL,
    service text NOT NULL,
    -- calls[d]: the calls on day d of the month; always 31 cells (zero past the month's last day).
    calls bigint[] NOT NULL CHECK (cardinality(calls) = 31),
    PRIMARY KEY (zone, org_id, month, service)
);

-- Calls of an org and its whole subtree per local day in the org's own zone: includeSubOrgs in one read.
CREATE TABLE api_call_subtree_months (
    org_id text NOT NULL,
    month date NOT NULL,
    service text NOT NULL,
    calls bigint[] NOT NULL CHECK (cardinality(calls) = 31),
    PRIMARY KEY (org_id, month, service)
);

INSERT INTO api_call_months (zone, org_id, month, service, calls)
SELECT k.zone, k.org_id, k.month, k.service, array_agg(coalesce(d.calls, 0) ORDER BY i)
FROM (SELECT DISTINCT zone, org_id, date_trunc('month', day)::date AS month, service FROM api_call_days) k
CROSS JOIN generate_series(1, 31) AS i
LEFT JOIN api_call_days d
    ON d.zone = k.zone AND d.org_id = k.org_id AND d.service = k.service
    AND d.day = k.month + (i - 1) AND date_trunc('month', d.day) = k.month
GROUP BY k.zone, k.org_id, k.month, k.service;

INSERT INTO api_call_subtree_months (org_id, month, service, calls)
SELECT k.org_id, k.month, k.service, array_agg(coalesce(d.calls, 0) ORDER BY i)
FROM (SELECT DISTINCT org_id, date_trunc('month', day)::date AS month, service FROM api_call_subtree_days) k
CROSS JOIN generate_series(1, 31) AS i
LEFT JOIN api_call_subtree_days d
    ON d.org_id = k.org_id AND d.service = k.service
    AND d.day = k.month + (i - 1) AND date_trunc('month', d.day) = k.month
GROUP BY k.org_id, k.month, k.service;

DROP TABLE api_call_days;
DROP TABLE api_call_subtree_days;
