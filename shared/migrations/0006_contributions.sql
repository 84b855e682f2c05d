-- Contribution statistics (the Stackalytics API): the directory, every activity record with the user
-- and company it counts for, and the sums every statistic is answered from.

-- Users of the directory, and authors nobody mapped (user_id = their e-mail or Launchpad id).
CREATE TABLE contribution_users (
    user_id text PRIMARY KEY,
    user_name text NOT NULL,
    launchpad_id text,
    emails text[] NOT NULL DEFAULT '{}',
    -- [{"company_name", "end_date"}] by end_date, the open one (0) last; NULL for an unmapped author.
    companies jsonb,
    in_directory boolean NOT NULL,
    -- Records counted for the user, and the stream position of the first (names an unmapped author).
    record_count bigint NOT NULL DEFAULT 0,
    first_seq bigint
);
CREATE INDEX contribution_users_by_launchpad_id ON contribution_users (launchpad_id)
    WHERE in_directory AND launchpad_id IS NOT NULL;

CREATE TABLE contribution_user_emails (
    email text PRIMARY KEY,
    user_id text NOT NULL
);

CREATE TABLE contribution_companies (
    company_name text PRIMARY KEY,
    domains text[] NOT NULL,
    aliases text[] NOT NULL,
    -- When two companies claim a domain, the one saved last has it.
    saved_seq bigint NOT NULL
);

CREATE TABLE contribution_releases (
    release_name text PRIMARY KEY,
    end_date bigint NOT NULL
);

CREATE TABLE contribution_modules (
    module text PRIMARY KEY,
    organization text NOT NULL,
    uri text NOT NULL,
    project_type text NOT NULL
);

CREATE TABLE contribution_project_types (
    project_type text PRIMARY KEY,
    title text NOT NULL,
    modules text[] NOT NULL,
    child boolean NOT NULL,
    saved_seq bigint NOT NULL
);

CREATE TABLE contribution_module_groups (
    module_group text PRIMARY KEY,
    modules text[] NOT NULL
);

-- Each project type's modules, resolved through module groups and organizations.
CREATE TABLE contribution_project_type_modules (
    project_type text NOT NULL,
    module text NOT NULL,
    PRIMARY KEY (project_type, module)
);
CREATE INDEX contribution_project_type_modules_by_module ON contribution_project_type_modules (module);

-- Every activity record once (by its API primary_key), with whom and which company it counts for.
CREATE TABLE contribution_records (
    primary_key text PRIMARY KEY,
    record_type text NOT NULL CHECK (record_type IN ('commit', 'mark', 'email', 'bpd', 'bpc')),
    -- Stream position of its event: the first record of an unmapped author names them.
    seq bigint NOT NULL,
    date bigint NOT NULL,
    module text NOT NULL,
    author_email text,
    launchpad_id text,
    author_name text,
    user_id text NOT NULL,
    company_name text NOT NULL,
    -- False for a robot's commit and a mark other than Code-Review: kept, but never counted or listed.
    counted boolean NOT NULL,
    loc bigint NOT NULL DEFAULT 0,
    value smallint,
    details jsonb NOT NULL
);
CREATE INDEX contribution_records_by_email ON contribution_records (author_email);
CREATE INDEX contribution_records_by_launchpad_id ON contribution_records (launchpad_id)
    WHERE launchpad_id IS NOT NULL;
CREATE INDEX contribution_records_by_user ON contribution_records (user_id, seq);
-- A company's domains can change after its records: the e-mails ending in a domain, found by prefix
-- on the reversed address ("moc.ph@" and "moc.ph." for hp.com).
CREATE INDEX contribution_records_by_domain ON contribution_records (reverse(author_email) text_pattern_ops);
-- The activity log: newest first, by kind, optionally by user, module or company.
CREATE INDEX contribution_activity ON contribution_records (record_type, date DESC, primary_key)
    WHERE counted;
CREATE INDEX contribution_activity_by_user ON contribution_records (record_type, user_id, date DESC, primary_key)
    WHERE counted;
CREATE INDEX contribution_activity_by_module ON contribution_records (record_type, module, date DESC, primary_key)
    WHERE counted;
CREATE INDEX contribution_activity_by_company
    ON contribution_records (record_type, company_name, date DESC, primary_key) WHERE counted;

-- The sums. One row per (rollup, kind, key): the months it has records in (ascending) and, aligned
-- with them, running totals, so a total up to any month is one binary search and one array element
-- (see contribution_through). Rollups: 0 = (module, company, user), 1 = module, 2 = company, 3 = user,
-- 4 = (project type, user), 5 = (project type, company); absent parts of the key are ''. Kinds:
-- 1 commit, 2 Code-Review mark, 3 e-mail, 4 bpd, 5 bpc. n counts records; loc (commits) and the marks
-- by value (marks) are NULL for other kinds.
CREATE TABLE contribution_month_sums (
    rollup smallint NOT NULL,
    kind smallint NOT NULL,
    project_type text NOT NULL,
    module text NOT NULL,
    company text NOT NULL,
    user_id text NOT NULL,
    months integer[] NOT NULL,
    n integer[] NOT NULL,
    loc bigint[],
    m_neg2 integer[],
    m_neg1 integer[],
    m_zero integer[],
    m_pos1 integer[],
    m_pos2 integer[],
    PRIMARY KEY (rollup, kind, project_type, module, company, user_id)
);
CREATE INDEX contribution_month_sums_by_company ON contribution_month_sums (kind, company, user_id, module)
    WHERE rollup = 0;
CREATE INDEX contribution_month_sums_by_user ON contribution_month_sums (kind, user_id, module, company)
    WHERE rollup = 0;

-- The same by day within one month, for the finest key only: a span that starts or ends inside a
-- month reads that month's days here, whatever the grouping.
CREATE TABLE contribution_day_sums (
    kind smallint NOT NULL,
    month integer NOT NULL,
    module text NOT NULL,
    company text NOT NULL,
    user_id text NOT NULL,
    days integer[] NOT NULL,
    n integer[] NOT NULL,
    loc bigint[],
    m_neg2 integer[],
    m_neg1 integer[],
    m_zero integer[],
    m_pos1 integer[],
    m_pos2 integer[],
    PRIMARY KEY (kind, month, module, company, user_id)
);
CREATE INDEX contribution_day_sums_by_company ON contribution_day_sums (kind, month, company, user_id, module);
CREATE INDEX contribution_day_sums_by_user ON contribution_day_sums (kind, month, user_id, module, company);

-- The running total up to and including period ``upto``: the element of the last period at or
-- before it (width_bucket is a binary search), 0 before the first. Simple enough to be inlined.
CREATE FUNCTION contribution_through(periods integer[], cum integer[], upto integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(cum[width_bucket(upto, periods)], 0) $$;
CREATE FUNCTION contribution_through(periods integer[], cum bigint[], upto integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(cum[width_bucket(upto, periods)], 0) $$;
