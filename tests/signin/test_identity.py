"""Reading the CRM's own login (gateway/signin/identity.py): who signs in, and whether it worked."""

from __future__ import annotations

import json

import pytest

from gateway.config.signin import Login
from gateway.errors import AmbiguousLogin
from gateway.signin.identity import (
    MAX_NAME,
    canonical_user,
    login_succeeded,
    login_user,
    sent_back,
    set_cookie_names,
)

LOGIN = Login(mode="upstream", path="/login", success_cookie="sid", failure_location="/login")
FORM = "application/x-www-form-urlencoded"


def form_user(body: bytes, login: Login = LOGIN) -> str:
    return login_user(body, FORM, login)


# -- form bodies ------------------------------------------------------------------------------


def test_user_name_is_read_from_a_form_body() -> None:
    assert form_user(b"username=alice&password=s3cret&csrf=abc") == "alice"


def test_user_name_is_read_from_a_configured_field() -> None:
    login = Login(mode="upstream", username_field="login[email]", success_cookie="sid")

    assert form_user(b"login%5Bemail%5D=alice%40example.com&pw=x", login) == "alice@example.com"


@pytest.mark.parametrize(
    ("body", "user"),
    [
        (b"username=alice+smith", "alice smith"),
        (b"username=alice%20smith", "alice smith"),
        (b"username=j%C3%BCrgen", "jurgen"),  # canonical: accents removed
        (b"username=alice%2Bsales%40example.com", "alice+sales@example.com"),
        (b"&&username=alice&", "alice"),
        (b"password=a%3Db%26c&username=alice", "alice"),
        (b"user%6Eame=alice", "alice"),
    ],
)
def test_form_values_are_percent_and_plus_decoded(body: bytes, user: str) -> None:
    assert form_user(body) == user


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
        "  application/x-www-form-urlencoded  ;charset=utf-8",
    ],
)
def test_form_content_type_is_recognised_with_parameters_and_any_case(content_type: str) -> None:
    assert login_user(b"username=alice", content_type, LOGIN) == "alice"


def test_the_field_twice_is_ambiguous() -> None:
    with pytest.raises(AmbiguousLogin, match="appears 2 times"):
        form_user(b"username=alice&password=x&username=bob")


def test_the_field_twice_with_the_same_value_is_still_ambiguous() -> None:
    with pytest.raises(AmbiguousLogin, match="appears 2 times"):
        form_user(b"username=alice&username=alice")


def test_a_body_without_the_field_names_nobody() -> None:
    with pytest.raises(AmbiguousLogin, match="appears 0 times"):
        form_user(b"user=alice&password=x")


@pytest.mark.parametrize(
    "body",
    [b"username=alice;username=bob", b"username=alice&password=a;b", b"username=alice;"],
)
def test_a_semicolon_in_a_form_body_is_refused(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="';'"):
        form_user(body)


def test_an_encoded_semicolon_in_a_value_is_fine() -> None:
    assert form_user(b"username=alice&password=a%3Bb") == "alice"


@pytest.mark.parametrize(
    "body",
    [
        b"username[]=bob",
        b"username=alice&username[]=bob",
        b"username%5B%5D=bob&username=alice",
        b"username=alice&username[0]=bob",
        b"username=alice&username[x][y]=bob",
        b"username=alice&+username=bob",
        b"username=alice&%20username=bob",
        b"username=alice&username%20=bob",
        b"username=alice&username]=bob",
    ],
)
def test_a_field_another_server_may_read_as_the_user_name_is_refused(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="may be read as 'username'"):
        form_user(body)


@pytest.mark.parametrize("name", [b"user.name", b"user+name", b"user%20name", b"user.name[]"])
def test_a_field_php_would_rename_to_the_configured_one_is_refused(name: bytes) -> None:
    login = Login(mode="upstream", username_field="user_name", success_cookie="sid")

    with pytest.raises(AmbiguousLogin, match="may be read as 'user_name'"):
        form_user(b"user_name=alice&" + name + b"=bob", login)


@pytest.mark.parametrize("name", [b"login[email][]", b"login[email][0]", b"login%5Bemail%5D%5B%5D"])
def test_an_array_of_a_bracketed_field_is_refused(name: bytes) -> None:
    login = Login(mode="upstream", username_field="login[email]", success_cookie="sid")

    with pytest.raises(AmbiguousLogin, match="may be read as"):
        form_user(b"login[email]=alice&" + name + b"=bob", login)


@pytest.mark.parametrize("body", [b"usernames=bob&username=alice", b"xusername=bob&username=alice"])
def test_fields_that_merely_start_like_the_user_name_are_ignored(body: bytes) -> None:
    assert form_user(body) == "alice"


@pytest.mark.parametrize(
    "body",
    [
        b"username=%FF%FE",
        b"username=alice&password=%C3",
        b"%FF=x&username=alice",
        b"username=\xff",
    ],
)
def test_a_form_field_that_is_not_utf8_is_refused(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="not UTF-8"):
        form_user(body)


# -- JSON bodies ------------------------------------------------------------------------------


def test_user_name_is_read_from_a_json_body() -> None:
    body = json.dumps({"username": "Alice", "password": "x"}).encode()

    assert login_user(body, "application/json; charset=utf-8", LOGIN) == "alice"


def test_a_json_key_twice_is_ambiguous() -> None:
    with pytest.raises(AmbiguousLogin, match="appears twice"):
        login_user(b'{"username": "alice", "username": "bob"}', "application/json", LOGIN)


def test_a_json_key_twice_anywhere_in_the_body_is_ambiguous() -> None:
    body = b'{"username": "alice", "meta": {"a": 1, "a": 2}}'

    with pytest.raises(AmbiguousLogin, match="appears twice"):
        login_user(body, "application/json", LOGIN)


@pytest.mark.parametrize(
    "value", [["bob"], {"name": "bob"}, 1, None, True, ["alice", "bob"]], ids=repr
)
def test_a_json_user_name_that_is_not_a_string_is_refused(value: object) -> None:
    body = json.dumps({"username": value}).encode()

    with pytest.raises(AmbiguousLogin, match="not a string"):
        login_user(body, "application/json", LOGIN)


@pytest.mark.parametrize(
    "body", [b"", b"{", b"username=alice", b'{"username": "al\xffice"}', b"\xef\xbb\xbf{}"]
)
def test_a_json_body_that_does_not_parse_is_refused(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="does not parse"):
        login_user(body, "application/json", LOGIN)


@pytest.mark.parametrize("body", [b"[]", b'["username", "alice"]', b'"alice"', b"{}"])
def test_a_json_body_without_the_key_at_the_top_names_nobody(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="appears 0 times"):
        login_user(body, "application/json", LOGIN)


def test_json_escapes_are_decoded_before_the_name_is_checked() -> None:
    assert login_user(b'{"username": "\\u0061lice"}', "application/json", LOGIN) == "alice"


# -- other bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["", "multipart/form-data; boundary=x", "text/plain", "application/xml", "application/jsonx"],
)
def test_a_body_of_another_type_is_refused(content_type: str) -> None:
    with pytest.raises(AmbiguousLogin, match=r"is not read|names JSON outside"):
        login_user(b"username=alice", content_type, LOGIN)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        # Laravel's isJson: `/json` or `+json` anywhere in the Content-Type.
        ("application/x-www-form-urlencoded; x=/json", b'{"username": "bob"}'),
        ("application/x-www-form-urlencoded; profile=crm+json", b"username=alice"),
        ("application/x-www-form-urlencoded, application/json", b"username=alice"),
        # ASP.NET Core: names in any case.
        ("application/x-www-form-urlencoded", b"Username=bob&username=alice"),
        ("application/x-www-form-urlencoded", b"USERNAME=bob"),
        ("application/json", b'{"username": "alice", "Username": "bob"}'),
        ("application/json", b'{"userName": "bob"}'),
    ],
)
def test_a_body_a_framework_reads_as_another_user_is_refused(
    content_type: str, body: bytes
) -> None:
    with pytest.raises(AmbiguousLogin):
        login_user(body, content_type, LOGIN)


# -- canonical user names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("ALICE", "alice"),
        ("  Alice\t", "alice"),
        ("Straße", "strasse"),
        ("ＡＬＩＣＥ", "alice"),  # fullwidth
        ("\ufb01na", "fina"),  # the ligature fi
        ("Ａlice@Example.COM", "alice@example.com"),
        ("\u00a0alice", "alice"),  # no-break space folds to a space, then is trimmed
        ("café", "cafe"),  # precomposed accent removed
        ("cafe\u0301", "cafe"),  # combining accent removed
        ("jürgen", "jurgen"),
        ("Ålesund", "alesund"),
        ("ÅLESUND", "alesund"),
        ("Ａ\u0301lice", "alice"),  # fullwidth letter with a combining accent
        ("Ольга", "ольга"),  # other scripts keep their letters
    ],
)
def test_user_names_are_compared_folded_normalised_and_without_accents(
    typed: str, canonical: str
) -> None:
    assert canonical_user(typed) == canonical


@pytest.mark.parametrize(
    "typed", ["alíce", "ALÍCE", "àlice", "ali\u0301ce", "alice\u0308", "ǎlǐce"]
)
def test_an_accented_spelling_of_a_name_is_the_same_user(typed: str) -> None:
    """CRMs that compare accent-insensitively (MySQL's default collations) find alice's row
    for `alíce`: it must never be a second, unenrolled identity of alice."""
    assert canonical_user(typed) == canonical_user("alice") == "alice"


def test_canonical_names_are_stable() -> None:
    for typed in ["Ålesund", "cafe\u0301", "Straße", "ＡＬＩＣＥ", "Ольга", "ǅemal"]:
        once = canonical_user(typed)
        assert canonical_user(once) == once


def test_case_variants_of_a_name_in_a_login_are_one_user() -> None:
    variants = [b"username=alice", b"username=ALICE", b"username=Alice+", b"username=%EF%BC%A1lice"]

    assert {form_user(body) for body in variants} == {"alice"}


def test_accent_variants_of_a_name_in_a_login_are_one_user() -> None:
    variants = [
        b"username=al%C3%ADce",  # alíce, precomposed
        b"username=ali%CC%81ce",  # i + combining acute
        b"username=%C3%80LICE",  # ÀLICE
    ]

    assert {form_user(body) for body in variants} == {"alice"}


@pytest.mark.parametrize(
    "body",
    [
        b"username=",
        b"username=+++",
        b"username=%CC%81%CC%88",  # accents alone: nothing left once they are removed
        b"username=alice%00",
        b"username=ali%0Ace",
        b"username=ali%E2%80%8Bce",  # zero-width space
        b"username=%E2%80%AEecila",  # right-to-left override
        b"username=" + b"a" * (MAX_NAME + 1),
    ],
)
def test_an_empty_over_long_or_control_character_user_name_is_refused(body: bytes) -> None:
    with pytest.raises(AmbiguousLogin, match="empty, over-long or control"):
        form_user(body)


def test_a_user_name_of_the_maximum_length_is_accepted() -> None:
    assert form_user(b"username=" + b"a" * MAX_NAME) == "a" * MAX_NAME


# -- did the CRM accept the password? ---------------------------------------------------------


def test_a_redirect_setting_the_session_cookie_is_success() -> None:
    assert login_succeeded(302, "/dashboard", ["sid=abc123; Path=/; HttpOnly"], LOGIN) is True


@pytest.mark.parametrize("status", [200, 204, 301, 304, 307, 400, 401, 403, 500])
def test_a_status_outside_the_success_list_is_failure(status: int) -> None:
    login = Login(mode="upstream", success_cookie="sid", success_status=(302, 303))

    assert login_succeeded(status, "/dashboard", ["sid=abc123"], login) is (status in (302, 303))


def test_a_configured_200_status_counts_as_success() -> None:
    login = Login(mode="upstream", success_cookie="sid", success_status=(200,))

    assert login_succeeded(200, "", ['sid="abc"; Path=/'], login) is True


def test_no_session_cookie_is_failure() -> None:
    assert login_succeeded(302, "/dashboard", [], LOGIN) is False
    assert login_succeeded(302, "/dashboard", ["other=abc; Path=/"], LOGIN) is False


@pytest.mark.parametrize(
    "header",
    [
        "sid=; Path=/",
        'sid=""; Path=/; Max-Age=0',
        "sid=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0",
        "sid=",
    ],
)
def test_an_empty_or_deleted_session_cookie_is_failure(header: str) -> None:
    assert login_succeeded(302, "/dashboard", [header], LOGIN) is False


def test_the_last_set_cookie_of_a_name_decides() -> None:
    deleted_last = ["sid=abc; Path=/", "sid=deleted; Max-Age=0"]
    set_last = ["sid=deleted; Max-Age=0", "sid=abc; Path=/"]

    assert login_succeeded(302, "/dashboard", deleted_last, LOGIN) is False
    assert login_succeeded(302, "/dashboard", set_last, LOGIN) is True


def test_cookie_names_are_matched_exactly() -> None:
    assert login_succeeded(302, "/", ["SID=abc", "sid_old=abc", "xsid=abc"], LOGIN) is False


@pytest.mark.parametrize(
    "location",
    [
        "/login",
        "/login?error=1",
        "/login/",
        "/login#failed",
        "http://crm.internal:8080/login?error=1",
        "https://crm.example.com/login",
        "//crm.example.com/login?e=1",
        "login?error=1",
        "./login?error=1",
        " /login?error=1",
    ],
)
def test_a_redirect_back_to_the_login_form_is_failure(location: str) -> None:
    assert login_succeeded(302, location, ["sid=abc; Path=/"], LOGIN) is False


@pytest.mark.parametrize(
    "location",
    [
        "/dashboard",
        "/",
        "https://crm.example.com/dashboard?next=/login",
        "/dashboard?from=/login",
        "dashboard",
        "",
    ],
)
def test_a_redirect_elsewhere_with_the_cookie_is_success(location: str) -> None:
    assert login_succeeded(302, location, ["sid=abc; Path=/"], LOGIN) is True


def test_relative_locations_resolve_against_the_login_path() -> None:
    login = Login(
        mode="upstream",
        path="/app/login.php",
        success_cookie="PHPSESSID",
        failure_location="/app/login.php",
    )
    cookie = ["PHPSESSID=abc; path=/"]

    assert login_succeeded(302, "login.php?error=1", cookie, login) is False
    assert login_succeeded(302, "../app/login.php", cookie, login) is False
    assert login_succeeded(302, "index.php", cookie, login) is True
    assert login_succeeded(302, "/login.php", cookie, login) is True


def test_the_failure_location_is_recognised_in_any_case() -> None:
    """An IIS CRM sends its form back as it spells it, whatever gateway.yaml says: a refused
    password is never taken for a login (its guesses would go uncounted)."""
    login = Login(
        mode="upstream",
        path="/Account/Login.aspx",
        success_cookie="ASP.NET_SessionId",
        failure_location="/account/login.aspx",
    )
    cookie = ["ASP.NET_SessionId=abc; path=/"]

    assert login_succeeded(302, "/Account/Login.aspx?failed=1", cookie, login) is False
    assert login_succeeded(302, "Login.aspx?failed=1", cookie, login) is False
    assert login_succeeded(302, "/ACCOUNT/LOGIN.ASPX", cookie, login) is False
    assert login_succeeded(302, "/Home/Index", cookie, login) is True


def test_without_a_failure_location_any_location_with_the_cookie_is_success() -> None:
    login = Login(mode="upstream", success_cookie="sid")

    assert login_succeeded(302, "/login?error=1", ["sid=abc"], login) is True


# -- Set-Cookie names -------------------------------------------------------------------------


def test_set_cookie_names_maps_each_name_to_its_value() -> None:
    headers = [
        "sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax",
        "remember=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        ".ASPXAUTH=ABC123; path=/; HttpOnly",
    ]

    assert set_cookie_names(headers) == {"sid": "abc", "remember": "1", ".ASPXAUTH": "ABC123"}


def test_set_cookie_names_keeps_the_last_value_of_a_name() -> None:
    assert set_cookie_names(["a=1", "b=2", "a=3"]) == {"a": "3", "b": "2"}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("sid=abc; Path=/; Secure; SameSite=None; Partitioned", "abc"),
        ("sid=abc; Path=/; Priority=High", "abc"),
        ("sid=abc; Expires=Mon, 01 Jan", "abc"),
        ("sid=abc; Path=/; bad@attr", "abc"),
        ('sid={"a":1}; Path=/', '{"a":1}'),
        ("sid=a:b/c=d; Path=/", "a:b/c=d"),
        ('sid="a b"; Path=/', '"a b"'),
        ("sid = abc ;Path=/", "abc"),
    ],
)
def test_set_cookie_value_is_read_whatever_the_attributes_are(header: str, value: str) -> None:
    assert set_cookie_names([header]) == {"sid": value}


def test_set_cookie_without_a_name_value_pair_is_ignored() -> None:
    assert set_cookie_names(["novalue", "=nameless", "; Path=/"]) == {}


def test_set_cookie_names_of_no_headers_is_empty() -> None:
    assert set_cookie_names([]) == {}


def test_a_partitioned_session_cookie_is_success() -> None:
    header = "sid=abc; Path=/; Secure; HttpOnly; SameSite=None; Partitioned"

    assert login_succeeded(302, "/dashboard", [header], LOGIN) is True


def test_an_attribute_named_like_the_session_cookie_is_not_the_cookie() -> None:
    login = Login(mode="upstream", success_cookie="Priority")

    assert login_succeeded(302, "/", ["other=1; Priority=High"], login) is False


@pytest.mark.parametrize(
    ("header", "pair"),
    [
        ("sid=abc; Path=/; HttpOnly", ("sid", "abc", True)),
        (" sid = abc ", ("sid", "abc", True)),
        ('sid="abc"; Path=/x', ("sid", '"abc"', True)),
        ("sid=a=b", ("sid", "a=b", True)),
        # Nameless: browsers keep it and send its value alone, which servers read as a pair.
        ("=sid=mallory; Path=/", ("sid", "mallory", False)),
        ("= sid = mallory", ("sid", "mallory", False)),
        ("=mallory", ("mallory", "", False)),
        ("sid; Path=/", ("sid", "", False)),
        ("=; Path=/", ("", "", False)),
    ],
)
def test_the_pair_a_browser_sends_back_for_a_set_cookie(
    header: str, pair: tuple[str, str, bool]
) -> None:
    assert sent_back(header) == pair
