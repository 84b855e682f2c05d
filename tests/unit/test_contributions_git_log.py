"""Reading ``git log`` output: the parser on fixed text (any chunking), numstat totals with renames and
binary files, and Stackalytics' definitions of a commit record."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from services.contributions_import.git_log import (
    FORMAT,
    GitCommit,
    GitLogParser,
    commit_data,
    numstat_totals,
    parse_git_log,
    skip_reason,
)


def header(sha: str, at: int, name: str, email: str, subject: str, body: str) -> bytes:
    return b"\0" + b"".join(f.encode() + b"\0" for f in (sha, str(at), name, email, subject, body))


A = "a" * 40
B = "b" * 40
C = "c" * 40
# What `git log --format=<FORMAT> --numstat -M` prints: a blank line, then one numstat line per file.
OUTPUT = (
    header(A, 1370134263, "Chuck Short", "Chuck.Short@Canonical.com", "python3: Introduce py33", "Body.\n")
    + b"\n2\t1\ttox.ini\n-\t-\tlogo.png\n0\t0\told.py => new.py\n3\t1\tsrc/{a => b}/x.py\n"
    + header(B, 1370134264, "Empty", "e@example.org", "an empty commit", "")
    # A body whose lines look like numstat lines, with blank lines and non-ASCII text.
    + header(C, 1370134265, "Zo\xe9", "z@example.org", "tricky", "1\t2\tnot-a-file\n\nCaf\xe9")
    + b"\n10\t0\tREADME\n"
)


def test_fixed_output_parses_to_every_figure() -> None:
    commits = parse_git_log(OUTPUT)
    assert commits == [
        GitCommit(
            A,
            1370134263,
            "Chuck Short",
            "Chuck.Short@Canonical.com",
            "python3: Introduce py33",
            "Body.\n",
            4,
            5,
            2,
        ),
        GitCommit(B, 1370134264, "Empty", "e@example.org", "an empty commit", "", 0, 0, 0),
        GitCommit(C, 1370134265, "Zoé", "z@example.org", "tricky", "1\t2\tnot-a-file\n\nCafé", 1, 10, 0),
    ]


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    raw = header(A, 1, "Bad \xff", "b@x.org", "s", "").replace("Bad \xc3\xbf".encode("latin-1"), b"Bad \xff")
    [commit] = parse_git_log(raw + b"\n1\t1\tf\n")
    assert commit.author_name == "Bad \ufffd" and (commit.files_changed, commit.lines_added) == (1, 1)


@given(st.lists(st.integers(min_value=1, max_value=len(OUTPUT) - 1), max_size=12))
def test_any_chunking_gives_the_same_commits(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(OUTPUT)]
    parser = GitLogParser()
    commits = []
    for lo, hi in itertools.pairwise(bounds):
        commits += parser.feed(OUTPUT[lo:hi])
    commits += parser.close()
    assert commits == parse_git_log(OUTPUT)


def test_output_cut_inside_a_header_is_an_error() -> None:
    parser = GitLogParser()
    assert parser.feed(OUTPUT[:30]) == []
    try:
        parser.close()
    except ValueError as exc:
        assert "inside a commit" in str(exc)
    else:
        raise AssertionError("a truncated log must not parse")


def test_numstat_counts_binary_files_with_no_lines_and_renames_once() -> None:
    assert numstat_totals("5\t3\ta\n-\t-\tbin\n0\t0\t{x => y}/z\n") == (3, 5, 3)
    assert numstat_totals("") == (0, 0, 0)


def test_the_format_is_nul_separated_header_fields() -> None:
    assert FORMAT == "%x00%H%x00%at%x00%an%x00%ae%x00%s%x00%b%x00"


def commit(
    message: str = "", subject: str = "s", email: str = "a@b.org", date: int = 1_400_000_000
) -> GitCommit:
    return GitCommit(A, date, "N", email, subject, message, 1, 2, 3)


def test_trailers_are_found_as_stackalytics_finds_them() -> None:
    message = (
        "Fix the thing.\n\nCloses-Bug: #1234567\nPartial-Bug: 2345678\nRelated-Bug: #3456789\n"
        "Implements: blueprint py33-support\nbp: other-bp\n"
        "Change-Id: I96d1ecd3f0069295e27127239c83afc32673ffec\nCloses-Bug: #1234567\n"
    )
    data = commit_data(commit(message))
    assert data.bug_id == ["1234567", "2345678", "3456789"]  # each once, in order of appearance
    assert data.blueprint_id == ["py33-support", "other-bp"]
    assert data.change_id == ["I96d1ecd3f0069295e27127239c83afc32673ffec"]
    assert (data.files_changed, data.lines_added, data.lines_deleted) == (1, 2, 3)


def test_only_the_body_is_searched_and_a_short_change_id_is_none() -> None:
    data = commit_data(commit("Change-Id: I1234\n", subject="Closes-Bug: #99 blueprint x"))
    assert (data.change_id, data.bug_id, data.blueprint_id) == ([], [], [])


def test_stackalytics_skips_submodule_updates_and_commits_without_an_email() -> None:
    assert skip_reason(commit(subject="Update git submodules")) == "a submodule update"
    assert skip_reason(commit(email="")) == "no author e-mail"
    assert skip_reason(commit(email=" \t")) == "no author e-mail"
    assert skip_reason(commit(date=-2_208_988_801)) is not None
    assert skip_reason(commit()) is None


def test_emails_keep_only_safe_characters_lower_cased() -> None:
    assert commit_data(commit(email="Jo Hn <Jo@Ex.ORG>")).author_email == "john<jo@ex.org>"


def test_control_characters_become_replacement_and_long_messages_are_cut() -> None:
    data = commit_data(GitCommit(A, 1, "a\x01b", "a@b.org", "s\x7f", "x\ty\r\nz\x00" + "m" * 30_000, 0, 0, 0))
    assert data.author_name == "a\ufffdb" and data.subject == "s\ufffd"
    assert data.message.startswith("x\ty\r\nz\ufffd") and data.message.endswith("...")
    assert len(data.message) == 20_000
