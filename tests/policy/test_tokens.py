"""The credential judged is the credential forwarded (issue #12, item 2).

An allowed token beside an address-restricted one — repeated in the query, in two header
lines, in two configured places, in spellings a CGI or PHP CRM reads as the same name — used
to be judged by the first and forwarded with both; most frameworks read the last. Now such a
request is refused with a JSON 400 before the CRM, as is a scheme the policy does not judge.
Real gateway, real echo CRM, clients on their own loopback addresses (tests/web/test_guard.py).
"""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.errors import AmbiguousCredential
from gateway.policy.model import TokenLocation
from gateway.policy.tokens import credential_places, find_credential
from tests.conftest import Served, send_raw
from tests.web.test_guard import ALICE_TOKEN, SYNC_TOKEN, clients, guarded

__all__ = ["clients", "guarded"]  # fixtures, used by name

SYNC, ALICE = f"Bearer {SYNC_TOKEN}", f"Bearer {ALICE_TOKEN}"

# From 127.0.0.3 (the integration network) sync's token passes and alice's (office only) does
# not: each request below pairs the two.
AMBIGUOUS = {
    "query key twice": ([], f"?api_key={SYNC_TOKEN}&api_key={ALICE_TOKEN}"),
    "query key twice, other order": ([], f"?api_key={ALICE_TOKEN}&api_key={SYNC_TOKEN}"),
    "two Authorization lines": ([("Authorization", SYNC), ("Authorization", ALICE)], ""),
    "header and query": ([("Authorization", SYNC)], f"?api_key={ALICE_TOKEN}"),
    "two configured headers": ([("Authorization", SYNC), ("X-API-Key", ALICE_TOKEN)], ""),
    "an underscore spelling": ([("X-API-Key", SYNC_TOKEN), ("X_API_Key", ALICE_TOKEN)], ""),
    "a PHP array key": ([], f"?api_key={SYNC_TOKEN}&api_key[]={ALICE_TOKEN}"),
    "a PHP dotted key": ([], f"?api_key={SYNC_TOKEN}&api.key={ALICE_TOKEN}"),
    "a semicolon": ([], f"?api_key={SYNC_TOKEN};api_key={ALICE_TOKEN}"),
    "an encoded name": ([], f"?api_key={SYNC_TOKEN}&api%5Fkey={ALICE_TOKEN}"),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
async def test_a_request_with_two_credentials_is_refused_with_json_before_the_crm(
    guarded: Served, case: str
) -> None:
    headers, query = AMBIGUOUS[case]
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    request = (
        f"GET /api/contacts{query} HTTP/1.1\r\nHost: crm\r\nAccept: text/html\r\n"
        f"{lines}Connection: close\r\n\r\n"
    )
    raw = await send_raw(guarded.port, request.encode(), source="127.0.0.3")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head  # an API client never gets a page, whatever it accepts
    assert json.loads(body)["error"] == "credential_ambiguous"
    assert b"raw_path" not in body  # the echo CRM never answered


async def test_a_scheme_the_policy_does_not_judge_never_reaches_the_crm(
    guarded: Served, clients: dict[str, aiohttp.ClientSession]
) -> None:
    """The policy reads Bearer and Token from Authorization: Basic credentials (which a CRM
    may accept as a password) would have gone to the CRM unjudged, as an anonymous request."""
    basic = "Basic " + base64.b64encode(b"alice:alice-password").decode()
    for value in (basic, "Digest username=alice", "Negotiate abc", "Bearer"):
        async with clients["127.0.0.3"].get(
            f"{guarded.url}/contacts", headers={"Authorization": value}
        ) as r:
            assert r.status == 400, value
            assert (await r.json())["error"] == "credential_ambiguous"


async def test_one_credential_in_one_place_still_passes(
    guarded: Served, clients: dict[str, aiohttp.ClientSession]
) -> None:
    for kwargs in (
        {"headers": {"Authorization": SYNC}},
        {"headers": {"X_API_Key": SYNC_TOKEN}},
        {"params": {"api_key": SYNC_TOKEN, "other": "1;2"}},
    ):
        async with clients["127.0.0.3"].get(f"{guarded.url}/api/x", **kwargs) as r:  # type: ignore[arg-type]
            assert r.status == 200, kwargs


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([], "", None),
        ([("Authorization", "Bearer  x ")], "", "x"),
        ([("authorization", "token x")], "", "x"),
        ([("X-Api-Key", "  ")], "api_key=", None),  # empty values carry nothing
        ([], "a=1&api_key=x%2By+z", "x+y z"),
        ([], "api_keys=1&xapi_key=2&api_key=x", "x"),
        ([("Authorization", "Basic " + base64.b64encode(b"u:p").decode())], "", "u:p"),
    ],
)
def test_finding_the_one_credential(
    headers: list[tuple[str, str]], query: str, expected: str | None
) -> None:
    places = credential_places(
        (
            TokenLocation(header="Authorization", schemes=("Bearer", "Token")),
            TokenLocation(header="Authorization", schemes=("Basic",)),
            TokenLocation(header="X-API-Key"),
            TokenLocation(query="api_key"),
        )
    )
    assert find_credential(CIMultiDict(headers), query, places) == expected


def test_a_header_with_many_dashes_has_a_bounded_number_of_spellings() -> None:
    places = credential_places((TokenLocation(header="a-b-c-d-e-f-g-h-i-j"),))
    assert sum(len(spellings) for spellings, _ in places.headers) == 2
    with pytest.raises(AmbiguousCredential):
        find_credential(
            CIMultiDict([("a-b-c-d-e-f-g-h-i-j", "1"), ("a_b_c_d_e_f_g_h_i_j", "2")]),
            "",
            places,
        )


def test_a_basic_pair_is_judged_by_the_owner_of_either_half() -> None:
    """CRMs read a token from Basic's user part or its password part: each half is looked
    up, and halves that are two users' tokens read two ways."""
    from gateway.policy.tokens import TokenTable, digest

    table = TokenTable()
    table.replace(1, [("t1", "alice", digest(ALICE_TOKEN)), ("t2", "sync", digest(SYNC_TOKEN))])
    for pair in (f"x:{ALICE_TOKEN}", f"{ALICE_TOKEN}:", f"{ALICE_TOKEN}:x", ALICE_TOKEN):
        found = table.lookup(pair)
        assert found is not None and found.user == "alice", pair
    assert table.lookup("x:y") is None
    with pytest.raises(AmbiguousCredential):
        table.lookup(f"{SYNC_TOKEN}:{ALICE_TOKEN}")
