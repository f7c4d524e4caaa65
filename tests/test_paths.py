"""Paths normalised once (PN-1), and the globs path rules are written in."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from gateway.errors import BadRequest
from gateway.paths import compile_glob, normalize_path


def refused(path: str) -> BadRequest:
    """The BadRequest that normalize_path raises for `path` (fails the test if it returns)."""
    with pytest.raises(BadRequest) as caught:
        normalize_path(path)
    return caught.value


REFUSED = "400 path_ambiguous"


def outcome(path: str) -> str:
    """The normalised path, or REFUSED (a normalised path always starts with '/')."""
    try:
        return normalize_path(path)
    except BadRequest as error:
        return f"{error.status} {error.reason}"


# -- normalize_path: what is decoded and what is kept ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/%61dmin", "/admin"),
        ("/%41DMIN", "/ADMIN"),
        ("/%61%64%6d%69%6e", "/admin"),
        ("/%7E", "/~"),
        ("/%7e", "/~"),
        ("/~user", "/~user"),
        ("/a%2Db%5Fc%2Ed", "/a-b_c.d"),
        ("/%30%39", "/09"),
        ("/admin/%78", "/admin/x"),
    ],
)
def test_escapes_of_unreserved_characters_are_decoded(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/%e2%9c%93", "/%E2%9C%93"),
        ("/%E2%9C%93", "/%E2%9C%93"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%2bb", "/a%2Bb"),
        ("/a%25b", "/a%25b"),
        ("/%2525", "/%2525"),
        ("/50%25off", "/50%25off"),
        ("/a%40b", "/a%40b"),
        ("/%ef%bd%81dmin", "/%EF%BD%81dmin"),
    ],
)
def test_other_escapes_are_kept_with_upper_case_hex(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_escaped_percent_is_not_decoded_twice() -> None:
    # %252e is an escaped '%' followed by '2e': decoding once gives the text %2e, not a dot.
    assert normalize_path("/x/%252e%252e/admin") == "/x/%252e%252e/admin"


def test_raw_utf8_text_is_kept_as_it_is() -> None:
    assert normalize_path("/café/✓") == "/café/✓"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/./b", "/a/b"),
        ("/./a", "/a"),
        ("/a/x/../b", "/a/b"),
        ("/a/x/y/../../b", "/a/b"),
        ("/x/../admin", "/admin"),
        ("/a/%2e/b", "/a/b"),
        ("/a/x/%2e%2e/b", "/a/b"),
        ("/a/x/%2E%2E/b", "/a/b"),
        ("/a/x/.%2e/b", "/a/b"),
        ("/a/x/%2e./b", "/a/b"),
        ("/_gateway/static/../admin", "/_gateway/admin"),
        ("/_gateway/static/../../admin", "/admin"),
        ("/_gateway/static/%2e%2e/%2e%2e/admin", "/admin"),
    ],
)
def test_dot_segments_are_resolved_after_decoding(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("//admin", "/admin"),
        ("///admin", "/admin"),
        ("/admin//x", "/admin/x"),
        ("/a///b//c", "/a/b/c"),
        ("//", "/"),
    ],
)
def test_duplicate_slashes_are_merged(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/admin/", "/admin/"),
        ("/a/b/", "/a/b/"),
        ("/admin//", "/admin/"),
        ("/admin/.", "/admin/"),
        ("/a/b/..", "/a/"),
        ("/a/b/%2e%2e", "/a/"),
    ],
)
def test_trailing_slash_is_kept(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_path_without_a_trailing_slash_gets_none() -> None:
    assert normalize_path("/admin") == "/admin"
    assert normalize_path("/a/b") == "/a/b"


@pytest.mark.parametrize("raw", ["/", "/.", "/./", "/a/..", "/a/../", "/%2e", "/a/%2e%2e"])
def test_root_and_what_resolves_to_it_is_the_root(raw: str) -> None:
    assert normalize_path(raw) == "/"


@pytest.mark.parametrize(
    "name", ["/...", "/..a", "/a..", "/.hidden", "/a.b", "/%2e%2e%2e", "/admin.", "/admin::$DATA"]
)
def test_segments_that_only_look_like_dots_are_ordinary_names(name: str) -> None:
    assert normalize_path(name) == unquote(name)


@pytest.mark.parametrize(
    "raw",
    [
        "/%61dmin/%2e%2e/x//y/./%7e",
        "/%e2%9c%93/a%20b/",
        "/x/%252e%252e/admin",
        "/_gateway/static/%2e%2e/admin",
        "/caf%c3%a9/",
    ],
)
def test_normalising_a_normalised_path_changes_nothing(raw: str) -> None:
    once = normalize_path(raw)

    assert normalize_path(once) == once


# -- normalize_path: what is refused -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # encoded slash, backslash, NUL, '#', '?' and ';', in both cases
        "/admin%2fx",
        "/admin%2Fx",
        "/%2Fadmin",
        "/x/..%2fadmin",
        "/admin%5cx",
        "/admin%5Cx",
        "/x/..%5cadmin",
        "/admin%00",
        "/admin%00.css",
        "/admin%23/x",
        "/admin%3fx=1",
        "/admin%3Fx=1",
        "/admin%3bx",
        "/admin%3Bx",
        # raw backslash and path parameters
        "/admin\\x",
        "/x/..\\admin",
        "/admin;x",
        "/admin;jsessionid=1",
        "/P;jsessionid=1",
        "/x/..;/admin",
        "/;/admin",
        # control characters, raw and encoded
        "/admin\tx",
        "/admin\nx",
        "/admin\rx",
        "/admin\x00",
        "/admin\x7f",
        "/admin x",  # a raw space is refused with them
        "/admin%09",
        "/admin%0a",
        "/admin%0A",
        "/admin%0d",
        "/admin%1f",
        "/admin%7f",
        "/admin%7F",
        "/admin%01",
        # malformed escapes
        "/admin%zz",
        "/admin%",
        "/admin%4",
        "/admin%4g",
        "/%%61dmin",
        "/%u0061dmin",
        # overlong and invalid UTF-8
        "/%c0%ae%c0%ae/admin",
        "/%c0%af",
        "/%e0%80%ae",
        "/%ff",
        "/admin%80",
        "/%c3",
        "/%c3%28",
        "/%ed%a0%80",
        # '..' above the root
        "/..",
        "/../admin",
        "/a/../..",
        "/a/../../admin",
        "/%2e%2e/admin",
        "/.%2e/admin",
        "/a/%2e%2e/%2E%2E/admin",
        # not a path at all
        "",
        "admin",
        "*",
        "http://crm.internal/admin",
    ],
)
def test_ambiguous_path_is_refused_with_400_path_ambiguous(raw: str) -> None:
    error = refused(raw)

    assert error.status == 400
    assert error.reason == "path_ambiguous"
    assert error.detail


def test_refusal_says_why_for_the_operator() -> None:
    assert refused("/admin%2fx").detail == "encoded %2F in path"
    assert refused("/admin%3b").detail == "encoded %3B in path"
    assert refused("/admin%0a").detail == "encoded control character in path"
    assert refused("/admin%zz").detail == "malformed percent-escape"
    assert refused("/%c0%ae").detail == "invalid or overlong UTF-8 in path"
    assert refused("/a/../..").detail == "path climbs above the root"
    assert refused("admin").detail == "path must start with /"


def test_a_refused_path_is_refused_every_time() -> None:
    # normalize_path caches answers; a refusal must not turn into a cached success.
    for _ in range(3):
        assert refused("/admin%2fx").reason == "path_ambiguous"


def test_raw_fragment_mark_is_refused_or_the_fragment_dropped() -> None:
    assert outcome("/admin#/_gateway/static/") in (REFUSED, "/admin")


@pytest.mark.parametrize("raw", ["/admin\udcff", "/\udcc0\udcae\udcc0\udcae/admin"])
def test_raw_bytes_that_are_not_utf8_are_refused(raw: str) -> None:
    assert refused(raw).reason == "path_ambiguous"


def test_raw_bytes_that_are_not_utf8_beside_an_escape_are_refused_not_a_crash() -> None:
    assert refused("/%61dmin\udcff").reason == "path_ambiguous"


# -- PN-1: the form that is judged is the form the backend resolves ------------------------------

ADMIN_RULE = compile_glob("/admin/**")
STATIC = "/_gateway/static"

PN1_MATRIX = [
    "/admin",
    "//admin",
    "/./admin",
    "/x/../admin",
    f"{STATIC}/../admin",
    f"{STATIC}/../../admin",
    f"{STATIC}/%2e%2e/admin",
    f"{STATIC}/%2e%2e/%2e%2e/admin",
    f"{STATIC}/%2e%2e%2fadmin",
    f"{STATIC}/..%2fadmin",
    f"{STATIC}/..%5cadmin",
    f"{STATIC}/..\\admin",
    f"{STATIC}/%252e%252e/admin",
    f"{STATIC}/..;/admin",
    "/admin;x",
    "/admin;jsessionid=1",
    "/admin%3bx",
    "/admin%23/x",
    "/admin%2523",
    "/admin/",
    "/admin.",
    "/admin%20",
    "/admin%09",
    "/admin%00",
    "/admin%00.css",
    "/admin::$DATA",
    "/%2Fadmin",
    "/%2fadmin",
    "/ADMIN",
    "/Admin",
    "/%61dmin",
    "/%41dmin",
    "/%ef%bd%81dmin",
    "/%u0061dmin",
    "/%c0%ae%c0%ae/admin",
    f"/admin?x={STATIC}/",
    f"{STATIC}/x?y=/admin",
    "/admin/users/../../admin/users",
    "/adminx/../admin/x",
    "/admin/x/../../public",
    "/admin%2f..%2f..%2fpublic",
    "/public/%2e%2e/admin",
    "/public/.%2e/admin/x",
    "/a%64min/x",
    pytest.param(f"/admin#{STATIC}/"),
]


def _resolve(segments: list[str]) -> list[str]:
    """Dot segments and empty segments as a lenient server resolves them (clamped at the root)."""
    out: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return out


def backend_views(target: str) -> list[list[str]]:
    """The segments a backend may make of a forwarded target, strict and lenient.

    Strict (RFC 3986): the path ends at '?' or '#', segments split at '/', `;params` dropped,
    each segment decoded once. Lenient (Tomcat, IIS, PHP front controllers): decoded once
    first, then ended at '?' or '#', split at '/' and '\\', `;params` dropped.
    """
    strict_path = re.split(r"[?#]", target, maxsplit=1)[0]
    strict = [unquote(s.split(";", 1)[0], errors="replace") for s in strict_path.split("/")]
    lenient_path = re.split(r"[?#]", unquote(target, errors="replace"), maxsplit=1)[0]
    lenient = [s.split(";", 1)[0] for s in re.split(r"[/\\]", lenient_path)]
    return [_resolve(strict), _resolve(lenient)]


def test_backend_model_sees_the_bypasses_the_matrix_is_about() -> None:
    # The model itself must see /admin behind each classic trick, or the matrix proves nothing.
    for trick in [
        "/x/../admin",
        "/x/..%2fadmin",
        "/x/..;/admin",
        "/admin;x",
        "/admin#/x",
        "/x/..\\admin",
    ]:
        assert any(view[:1] == ["admin"] for view in backend_views(trick)), trick


@pytest.mark.parametrize("payload", PN1_MATRIX)
def test_pn1_payload_is_refused_or_judged_as_the_backend_resolves_it(payload: str) -> None:
    # The guard splits the query off first and judges, then forwards, the normalised path.
    judged = outcome(payload.partition("?")[0])
    if judged == REFUSED:
        return

    rule_matches = ADMIN_RULE.match(judged) is not None
    for view in backend_views(judged):
        assert (view[:1] == ["admin"]) == rule_matches, (judged, view)
    assert normalize_path(judged) == judged


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("//admin", "/admin"),
        ("/./admin", "/admin"),
        ("/x/../admin", "/admin"),
        (f"{STATIC}/../../admin", "/admin"),
        (f"{STATIC}/%2e%2e/%2e%2e/admin", "/admin"),
        ("/admin/", "/admin/"),
        ("/%61dmin", "/admin"),
        ("/admin/users/../../admin/users", "/admin/users"),
        ("/adminx/../admin/x", "/admin/x"),
        ("/public/.%2e/admin/x", "/admin/x"),
    ],
)
def test_pn1_disguised_admin_paths_are_judged_as_admin(payload: str, expected: str) -> None:
    judged = normalize_path(payload)

    assert judged == expected
    assert ADMIN_RULE.match(judged)


@pytest.mark.parametrize(
    "payload",
    [
        f"{STATIC}/%2e%2e%2fadmin",
        f"{STATIC}/..%2fadmin",
        f"{STATIC}/..%5cadmin",
        f"{STATIC}/..\\admin",
        f"{STATIC}/..;/admin",
        "/admin;x",
        "/admin%3bx",
        "/admin%23/x",
        "/admin%09",
        "/admin%00.css",
        "/%2Fadmin",
        "/%u0061dmin",
        "/%c0%ae%c0%ae/admin",
    ],
)
def test_pn1_payloads_that_the_gateway_refuses(payload: str) -> None:
    assert refused(payload).reason == "path_ambiguous"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("/ADMIN", "/ADMIN"),
        ("/admin.", "/admin."),
        ("/admin%20", "/admin%20"),
        ("/admin%2523", "/admin%2523"),
        ("/%ef%bd%81dmin", "/%EF%BD%81dmin"),
        (f"{STATIC}/%252e%252e/admin", f"{STATIC}/%252e%252e/admin"),
    ],
)
def test_pn1_look_alikes_are_other_paths_and_not_under_admin(payload: str, expected: str) -> None:
    judged = normalize_path(payload)

    assert judged == expected
    assert ADMIN_RULE.match(judged) is None


# -- compile_glob ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin", "/admin/", "/admin/x", "/admin/x/y", "/admin/x/y/"])
def test_double_star_matches_the_tree_itself_included(path: str) -> None:
    assert compile_glob("/admin/**").match(path)


@pytest.mark.parametrize(
    "path", ["/administrator", "/adminx", "/admin-old/x", "/Admin", "/ADMIN/x", "/x/admin", "/"]
)
def test_double_star_does_not_match_a_longer_name_or_another_tree(path: str) -> None:
    assert compile_glob("/admin/**").match(path) is None


@pytest.mark.parametrize("path", ["/", "/x", "/admin/x/y", "/%E2%9C%93"])
def test_root_double_star_matches_every_path(path: str) -> None:
    assert compile_glob("/**").match(path)


@pytest.mark.parametrize("path", ["/files/1/edit", "/files/abc/edit", "/files/a.b-c/edit"])
def test_single_star_matches_one_segment(path: str) -> None:
    assert compile_glob("/files/*/edit").match(path)


@pytest.mark.parametrize(
    "path",
    ["/files/1/2/edit", "/files/edit", "/files/1/edit/", "/files/1/edit/x", "/files/1/editx"],
)
def test_single_star_never_crosses_a_slash(path: str) -> None:
    assert compile_glob("/files/*/edit").match(path) is None


def test_single_star_inside_a_segment_stays_in_that_segment() -> None:
    glob = compile_glob("/reports/*.pdf")

    assert glob.match("/reports/q1.pdf")
    assert glob.match("/reports/x/q1.pdf") is None
    assert glob.match("/reports/q1.pdfx") is None


def test_exact_pattern_matches_only_that_path() -> None:
    glob = compile_glob("/login")

    assert glob.match("/login")
    for other in ["/login/", "/login/x", "/loginx", "/Login", "/x/login", "/logi"]:
        assert glob.match(other) is None, other


def test_match_is_anchored_at_the_end_even_before_a_newline() -> None:
    assert compile_glob("/login").match("/login\n") is None
    assert compile_glob("/admin/**").match("/admin\n") is None


@pytest.mark.parametrize(
    ("pattern", "same", "different"),
    [
        ("/a.b", "/a.b", "/axb"),
        ("/a+b", "/a+b", "/aab"),
        ("/a?b", "/a?b", "/ab"),
        ("/(x)", "/(x)", "/x"),
        ("/a|/b", "/a|/b", "/b"),
        ("/[ab]", "/[ab]", "/a"),
        ("/x{2}", "/x{2}", "/xx"),
        ("/^a$", "/^a$", "/a"),
        ("/a\\d", "/a\\d", "/a1"),
        ("/v1.0/**", "/v1.0/x", "/v1x0/x"),
    ],
)
def test_regex_metacharacters_in_patterns_are_literal(
    pattern: str, same: str, different: str
) -> None:
    glob = compile_glob(pattern)

    assert glob.match(same)
    assert glob.match(different) is None
