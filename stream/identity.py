"""Deterministic identity stitching: accounts on several platforms → one person.

Two accounts become one person when a ``link`` event joins them, or when they present the same
strong identifier (hashed e-mail, hashed phone, device id). The graph lives in any
``MutableMapping[str, Any]`` — a dict in tests, a Faust table in the stream — so every change is
one key write that a changelog can replay. Keys:

- ``a:<platform>:<user>`` → person id of the account (as first assigned)
- ``i:<kind>:<value>``    → person id that owns the identifier
- ``m:<person>``          → the person it was merged into (union-find parent)
- ``P:<person>``          → ``{"seq": n, "accounts": [...], "ids": [...]}`` for live persons

Person ids are ``p_`` + 20 hex digits of a salted SHA-256 of the first account and a sequence
number: stable once assigned, never revealing a raw identifier, and new for an account that comes
back after an erase. When two persons merge, the older one (lower ``seq``) survives.

>>> g = IdentityGraph({})
>>> a = g.resolve_account("shop", "u1").person_id
>>> r = g.link(("shop", "u1"), ("social", "@u1"))
>>> g.resolve_account("social", "@u1").person_id == a
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .models import Event, account_key


@dataclass(frozen=True, slots=True)
class Merge:
    """``absorbed`` was folded into ``survivor``; its profile must be merged and tombstoned."""

    absorbed: str
    survivor: str


@dataclass(slots=True)
class Resolution:
    person_id: str
    created: bool = False
    merges: list[Merge] = field(default_factory=list)
    accounts: tuple[str, ...] = ()


class IdentityGraph:
    """Union-find over persons, persisted key by key in ``store``."""

    def __init__(self, store: MutableMapping[str, Any], *, salt: str = "crossprofile") -> None:
        self.store = store
        self.salt = salt

    # --- lookups ---------------------------------------------------------------------------
    def person_id_for(self, account: str) -> str:
        digest = hashlib.sha256(f"{self.salt}\x00{account}".encode()).hexdigest()
        return "p_" + digest[:20]

    def find(self, person: str) -> str:
        """The live person that ``person`` now belongs to (follows merges, compresses paths)."""
        root = person
        seen: list[str] = []
        while (parent := self.store.get("m:" + root)) is not None:
            seen.append(root)
            root = parent
        for p in seen[:-1]:  # path compression, a changelog write each: only for long chains
            self.store["m:" + p] = root
        return root

    def lookup(self, platform: str, user_id: str) -> str | None:
        pid = self.store.get("a:" + account_key(platform, user_id))
        return None if pid is None else self.find(pid)

    def accounts(self, person: str) -> list[str]:
        rec = self.store.get("P:" + self.find(person))
        return list(rec["accounts"]) if rec else []

    # --- updates ---------------------------------------------------------------------------
    def _new_person(self, account: str) -> str:
        seq = int(self.store.get("seq", 0)) + 1
        pid = self.person_id_for(f"{account}\x00{seq}")
        while self.store.get("P:" + pid) is not None or self.store.get("m:" + pid) is not None:
            seq += 1  # astronomically unlikely collision
            pid = self.person_id_for(f"{account}\x00{seq}")
        self.store["seq"] = seq
        self.store["P:" + pid] = {"seq": seq, "accounts": [account], "ids": []}
        self.store["a:" + account] = pid
        return pid

    def resolve_account(self, platform: str, user_id: str) -> Resolution:
        account = account_key(platform, user_id)
        pid = self.store.get("a:" + account)
        if pid is None:
            return Resolution(self._new_person(account), created=True)
        return Resolution(self.find(pid))

    def union(self, a: str, b: str) -> Merge | None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        rec_a, rec_b = self.store["P:" + ra], self.store["P:" + rb]
        survivor, absorbed = (ra, rb) if rec_a["seq"] <= rec_b["seq"] else (rb, ra)
        rec_s, rec_x = (rec_a, rec_b) if survivor == ra else (rec_b, rec_a)
        merged = {
            "seq": rec_s["seq"],
            "accounts": rec_s["accounts"]
            + [x for x in rec_x["accounts"] if x not in rec_s["accounts"]],
            "ids": rec_s["ids"] + [x for x in rec_x["ids"] if x not in rec_s["ids"]],
        }
        self.store["P:" + survivor] = merged
        del self.store["P:" + absorbed]
        self.store["m:" + absorbed] = survivor
        return Merge(absorbed=absorbed, survivor=survivor)

    def _attach_identifiers(
        self, person: str, identifiers: Iterable[tuple[str, str]]
    ) -> list[Merge]:
        merges: list[Merge] = []
        for kind, value in identifiers:
            key = f"i:{kind}:{value}"
            owner = self.store.get(key)
            person = self.find(person)
            if owner is None:
                self.store[key] = person
                rec = self.store["P:" + person]
                self.store["P:" + person] = {**rec, "ids": [*rec["ids"], key]}
            else:
                merge = self.union(owner, person)
                if merge is not None:
                    merges.append(merge)
        return merges

    def link(self, a: tuple[str, str], b: tuple[str, str]) -> Resolution:
        ra = self.resolve_account(*a)
        rb = self.resolve_account(*b)
        merge = self.union(ra.person_id, rb.person_id)
        return Resolution(
            self.find(ra.person_id), created=ra.created, merges=[merge] if merge else []
        )

    def resolve(self, event: Event) -> Resolution:
        """The person behind ``event``, joining accounts as its link/identifiers demand."""
        res = self.resolve_account(event.platform, event.user_id)
        if event.link is not None:
            other = self.resolve_account(*event.link)
            merge = self.union(res.person_id, other.person_id)
            if merge is not None:
                res.merges.append(merge)
        if event.identifiers:
            res.merges.extend(
                self._attach_identifiers(res.person_id, sorted(event.identifiers.items()))
            )
        res.person_id = self.find(res.person_id)
        res.accounts = tuple(self.accounts(res.person_id))
        return res

    def erase(self, platform: str, user_id: str) -> tuple[str, list[str]] | None:
        """Forget the person behind an account: accounts, identifiers, merge records.

        Returns ``(person_id, accounts)`` erased, or None if the account is unknown.
        """
        pid = self.lookup(platform, user_id)
        if pid is None:
            return None
        rec = self.store.pop("P:" + pid)
        for account in rec["accounts"]:
            self.store.pop("a:" + account, None)
        for key in rec["ids"]:
            self.store.pop(key, None)
        # Merge records pointing at pid stay harmless: nothing references the absorbed ids now.
        return pid, list(rec["accounts"])


__all__ = ["IdentityGraph", "Merge", "Resolution"]
