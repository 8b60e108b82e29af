"""Identity stitching on a plain dict (the stream backs it with a Faust table)."""

from __future__ import annotations

import re

from stream.identity import IdentityGraph
from stream.models import Event

EMAIL = "ab" * 32


def event(platform: str, user: str, etype: str = "view", **kw: object) -> Event:
    return Event(
        event_id=f"{platform}-{user}-{etype}",
        platform=platform,
        user_id=user,
        type=etype,
        ts=0,
        **kw,
    )  # type: ignore[arg-type]


def test_new_accounts_are_new_persons_with_opaque_ids() -> None:
    g = IdentityGraph({})
    a = g.resolve(event("shop", "alice@example.com"))
    b = g.resolve(event("news", "bob"))
    assert a.person_id != b.person_id
    assert re.fullmatch(r"p_[0-9a-f]{20}", a.person_id)
    assert "alice" not in a.person_id


def test_person_id_is_stable_for_an_account() -> None:
    g = IdentityGraph({})
    first = g.resolve(event("shop", "u1")).person_id
    assert g.resolve(event("shop", "u1")).person_id == first


def test_link_joins_accounts_and_older_person_survives() -> None:
    g = IdentityGraph({})
    shop = g.resolve(event("shop", "u1")).person_id
    social = g.resolve(event("social", "@u1")).person_id
    res = g.resolve(event("social", "@u1", "link", link=("shop", "u1")))
    assert res.person_id == shop
    assert [(m.absorbed, m.survivor) for m in res.merges] == [(social, shop)]
    assert g.lookup("social", "@u1") == shop
    assert sorted(g.accounts(shop)) == ["shop:u1", "social:@u1"]


def test_shared_hashed_identifier_joins_accounts() -> None:
    g = IdentityGraph({})
    a = g.resolve(event("shop", "u1", "identify", identifiers={"email_sha256": EMAIL})).person_id
    res = g.resolve(event("video", "v9", "identify", identifiers={"email_sha256": EMAIL}))
    assert res.person_id == a
    assert len(res.merges) == 1


def test_transitive_joins_reach_one_person() -> None:
    g = IdentityGraph({})
    g.resolve(event("a", "1", "link", link=("b", "1")))
    g.resolve(event("c", "1", "link", link=("d", "1")))
    g.resolve(event("b", "1", "link", link=("d", "1")))
    persons = {g.lookup(p, "1") for p in "abcd"}
    assert len(persons) == 1


def test_replayed_link_changes_nothing() -> None:
    g = IdentityGraph({})
    e = event("social", "@u1", "link", link=("shop", "u1"))
    g.resolve(e)
    snapshot = dict(g.store)
    again = g.resolve(e)
    assert again.merges == []
    assert g.store == snapshot


def test_erase_forgets_every_account_and_identifier() -> None:
    g = IdentityGraph({})
    g.resolve(event("shop", "u1", "identify", identifiers={"email_sha256": EMAIL}))
    g.resolve(event("social", "@u1", "link", link=("shop", "u1")))
    pid = g.lookup("shop", "u1")
    erased = g.erase("social", "@u1")
    assert erased is not None and erased[0] == pid
    assert g.lookup("shop", "u1") is None and g.lookup("social", "@u1") is None
    assert not any(k.startswith(("a:", "i:", "P:")) for k in g.store)
    back = g.resolve(event("shop", "u1")).person_id
    assert back != pid  # a returning account is a new person
