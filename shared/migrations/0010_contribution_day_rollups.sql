-- Day rows for more rollups than the finest key, and a month rollup by project type alone.
--
-- A span's total is read from the month rows of the rollup whose key starts with the filters, plus the
-- days of the months it ends in. Those days came from the finest key (module, company, user) only, so
-- an answer with a row per engineer, or a project type's one-row summary, added up thousands of finest
-- day rows per request. Day rows now exist for the rollups listed in shared/contribution_sums.py
-- (DAY_ROLLUPS): by engineer, by project type and engineer, and by project type; and month rows by
-- project type alone (rollup 6), so the summary of a project type reads one row per kind.

-- The defaults keep a projector of the previous version working during a rollout: its rows are the
-- finest key's (rollup 0). What it applies then is missing from the new rollups: see "Upgrading" in
-- docs/operations.md.
ALTER TABLE contribution_day_sums
    ADD COLUMN rollup smallint NOT NULL DEFAULT 0,
    ADD COLUMN project_type text NOT NULL DEFAULT '';
ALTER TABLE contribution_day_sums DROP CONSTRAINT contribution_day_sums_pkey;
ALTER TABLE contribution_day_sums
    ADD PRIMARY KEY (rollup, kind, month, project_type, module, company, user_id);
DROP INDEX contribution_day_sums_by_company;
DROP INDEX contribution_day_sums_by_user;
CREATE INDEX contribution_day_sums_by_company ON contribution_day_sums (kind, month, company, user_id, module)
    WHERE rollup = 0;
CREATE INDEX contribution_day_sums_by_user ON contribution_day_sums (kind, month, user_id, module, company)
    WHERE rollup = 0;

-- backfill: the new rows, added up from the rows that were there (the projector writes them from now
-- on). The same statements are checked against the projector's own rows in
-- tests/integration/test_contributions_rebuild.py.

-- Day rows by engineer (3), by project type and engineer (4) and by project type (6), from the
-- finest day rows: back from running totals to what each day adds, added up per new key, and
-- running totals again.
INSERT INTO contribution_day_sums
    (rollup, kind, month, project_type, module, company, user_id, days, n, loc, m_neg2, m_neg1, m_zero, m_pos1, m_pos2)
WITH added AS (
    SELECT d.kind, d.month, d.module, d.user_id, u.day,
        u.n - coalesce(lag(u.n) OVER w, 0) AS n,
        u.loc - coalesce(lag(u.loc) OVER w, 0) AS loc,
        u.m_neg2 - coalesce(lag(u.m_neg2) OVER w, 0) AS m_neg2,
        u.m_neg1 - coalesce(lag(u.m_neg1) OVER w, 0) AS m_neg1,
        u.m_zero - coalesce(lag(u.m_zero) OVER w, 0) AS m_zero,
        u.m_pos1 - coalesce(lag(u.m_pos1) OVER w, 0) AS m_pos1,
        u.m_pos2 - coalesce(lag(u.m_pos2) OVER w, 0) AS m_pos2
    FROM contribution_day_sums d,
        unnest(d.days, d.n, d.loc, d.m_neg2, d.m_neg1, d.m_zero, d.m_pos1, d.m_pos2)
            AS u (day, n, loc, m_neg2, m_neg1, m_zero, m_pos1, m_pos2)
    WHERE d.rollup = 0
    WINDOW w AS (PARTITION BY d.kind, d.month, d.module, d.company, d.user_id ORDER BY u.day)
), keyed AS (
    SELECT 3 AS rollup, '' AS project_type, a.user_id AS key_user, a.kind, a.month, a.day, a.n, a.loc, a.m_neg2, a.m_neg1, a.m_zero, a.m_pos1, a.m_pos2
    FROM added a
    UNION ALL
    SELECT 4, p.project_type, a.user_id, a.kind, a.month, a.day, a.n, a.loc, a.m_neg2, a.m_neg1, a.m_zero, a.m_pos1, a.m_pos2
    FROM added a JOIN contribution_project_type_modules p USING (module)
    UNION ALL
    SELECT 6, p.project_type, '', a.kind, a.month, a.day, a.n, a.loc, a.m_neg2, a.m_neg1, a.m_zero, a.m_pos1, a.m_pos2
    FROM added a JOIN contribution_project_type_modules p USING (module)
), per_day AS (
    SELECT rollup, kind, month, project_type, key_user, day,
        sum(n) AS n, sum(loc) AS loc, sum(m_neg2) AS m_neg2, sum(m_neg1) AS m_neg1,
        sum(m_zero) AS m_zero, sum(m_pos1) AS m_pos1, sum(m_pos2) AS m_pos2
    FROM keyed
    GROUP BY rollup, kind, month, project_type, key_user, day
), running AS (
    SELECT rollup, kind, month, project_type, key_user, day,
        sum(n) OVER r AS n, sum(loc) OVER r AS loc, sum(m_neg2) OVER r AS m_neg2,
        sum(m_neg1) OVER r AS m_neg1, sum(m_zero) OVER r AS m_zero, sum(m_pos1) OVER r AS m_pos1,
        sum(m_pos2) OVER r AS m_pos2
    FROM per_day
    WINDOW r AS (PARTITION BY rollup, kind, month, project_type, key_user ORDER BY day)
)
SELECT rollup, kind, month, project_type, '', '', key_user,
    array_agg(day ORDER BY day),
    array_agg(n::integer ORDER BY day),
    CASE WHEN kind = 1 THEN array_agg(loc::bigint ORDER BY day) END,
    CASE WHEN kind = 2 THEN array_agg(m_neg2::integer ORDER BY day) END,
    CASE WHEN kind = 2 THEN array_agg(m_neg1::integer ORDER BY day) END,
    CASE WHEN kind = 2 THEN array_agg(m_zero::integer ORDER BY day) END,
    CASE WHEN kind = 2 THEN array_agg(m_pos1::integer ORDER BY day) END,
    CASE WHEN kind = 2 THEN array_agg(m_pos2::integer ORDER BY day) END
FROM running
GROUP BY rollup, kind, month, project_type, key_user;

-- Month rows by project type (6), from those by project type and company (5).
INSERT INTO contribution_month_sums
    (rollup, kind, project_type, module, company, user_id, months, n, loc, m_neg2, m_neg1, m_zero, m_pos1, m_pos2)
WITH added AS (
    SELECT s.kind, s.project_type, u.month,
        u.n - coalesce(lag(u.n) OVER w, 0) AS n,
        u.loc - coalesce(lag(u.loc) OVER w, 0) AS loc,
        u.m_neg2 - coalesce(lag(u.m_neg2) OVER w, 0) AS m_neg2,
        u.m_neg1 - coalesce(lag(u.m_neg1) OVER w, 0) AS m_neg1,
        u.m_zero - coalesce(lag(u.m_zero) OVER w, 0) AS m_zero,
        u.m_pos1 - coalesce(lag(u.m_pos1) OVER w, 0) AS m_pos1,
        u.m_pos2 - coalesce(lag(u.m_pos2) OVER w, 0) AS m_pos2
    FROM contribution_month_sums s,
        unnest(s.months, s.n, s.loc, s.m_neg2, s.m_neg1, s.m_zero, s.m_pos1, s.m_pos2)
            AS u (month, n, loc, m_neg2, m_neg1, m_zero, m_pos1, m_pos2)
    WHERE s.rollup = 5
    WINDOW w AS (PARTITION BY s.kind, s.project_type, s.company ORDER BY u.month)
), per_month AS (
    SELECT kind, project_type, month, sum(n) AS n, sum(loc) AS loc, sum(m_neg2) AS m_neg2,
        sum(m_neg1) AS m_neg1, sum(m_zero) AS m_zero, sum(m_pos1) AS m_pos1, sum(m_pos2) AS m_pos2
    FROM added
    GROUP BY kind, project_type, month
), running AS (
    SELECT kind, project_type, month,
        sum(n) OVER r AS n, sum(loc) OVER r AS loc, sum(m_neg2) OVER r AS m_neg2,
        sum(m_neg1) OVER r AS m_neg1, sum(m_zero) OVER r AS m_zero, sum(m_pos1) OVER r AS m_pos1,
        sum(m_pos2) OVER r AS m_pos2
    FROM per_month
    WINDOW r AS (PARTITION BY kind, project_type ORDER BY month)
)
SELECT 6, kind, project_type, '', '', '',
    array_agg(month ORDER BY month),
    array_agg(n::integer ORDER BY month),
    CASE WHEN kind = 1 THEN array_agg(loc::bigint ORDER BY month) END,
    CASE WHEN kind = 2 THEN array_agg(m_neg2::integer ORDER BY month) END,
    CASE WHEN kind = 2 THEN array_agg(m_neg1::integer ORDER BY month) END,
    CASE WHEN kind = 2 THEN array_agg(m_zero::integer ORDER BY month) END,
    CASE WHEN kind = 2 THEN array_agg(m_pos1::integer ORDER BY month) END,
    CASE WHEN kind = 2 THEN array_agg(m_pos2::integer ORDER BY month) END
FROM running
GROUP BY kind, project_type;
