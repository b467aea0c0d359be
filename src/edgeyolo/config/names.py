"""Names that go into MQTT topics and Home Assistant ids: the rules config and sinks share."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_id(name: str) -> str:
    """``name`` restricted to [A-Za-z0-9_-] (Home Assistant ids, device ids, client ids)."""
    return _NOT_ID.sub("_", name).strip("_") or "edgeyolo"


def ha_id(name: str) -> str:
    """``name`` as a Home Assistant id: accents folded to ASCII ('küche' -> 'kuche'), the rest
    of [^A-Za-z0-9_-] as '_'. Different names can give the same id: see :func:`ha_ids`."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return sanitize_id(folded.replace(" ", "_")) if folded.strip() else ""


def _short_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]


def ha_ids(names: Iterable[str]) -> dict[str, str]:
    """Map each distinct name to an id, unique among them and independent of their order.

    A name whose id no other name shares keeps it. Where several share one, a name that is
    exactly that id keeps it and the others get ``_<6 hex of a hash of the name>``; a name with
    nothing left after folding ('客厅') gets ``h<hash>``.
    """
    by_id: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        by_id.setdefault(ha_id(name), []).append(name)
    out: dict[str, str] = {}
    for base, group in by_id.items():
        for name in group:
            if not base:
                out[name] = f"h{_short_hash(name)}"
            elif len(group) == 1 or name == base:
                out[name] = base
            else:
                out[name] = f"{base}_{_short_hash(name)}"
    return out


def id_warnings(kind: str, names: Iterable[str]) -> list[str]:
    """One warning per group of ``kind`` names that fold to the same Home Assistant id."""
    names = list(dict.fromkeys(names))
    ids = ha_ids(names)
    by_id: dict[str, list[str]] = {}
    for name in names:
        by_id.setdefault(ha_id(name), []).append(name)
    return [
        f"{kind} {', '.join(repr(n) for n in group)} have the same Home Assistant id "
        f"{base!r}: they get {', '.join(repr(ids[n]) for n in group)} (stable, but rename "
        "one for readable entity ids)"
        for base, group in by_id.items()
        if len(group) > 1
    ]


def check_prefix(prefix: str) -> None:
    """Raise ValueError unless ``prefix`` is usable as the start of published topics."""
    bad = sorted({c for c in prefix if c in "+#\x00"})
    if bad:
        raise ValueError(f"{prefix!r} must not contain MQTT wildcards or NUL ({' '.join(bad)})")
    if prefix.startswith(("/", "$")) or prefix.endswith("/") or "//" in prefix:
        raise ValueError(
            f"{prefix!r}: no leading '/' or '$', no trailing '/', no empty level (like 'a/b')"
        )
