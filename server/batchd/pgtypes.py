"""Exact codecs for PostgreSQL's date, timestamp, timestamptz and interval.

asyncpg's built-in codecs are lossy at the edges: they read 'infinity' as 9999-12-31 and write
0001-01-01 as '-infinity', and they turn an interval's months into 30-day blocks. batchd
installs these instead, on asyncpg's binary "tuple" format (the wire integers), so that every
value, ±infinity and "1 year 2 months" included, survives the round trip:

    date          (days since 2000-01-01,)            <-> datetime.date | "infinity" | "-infinity"
    timestamp     (microseconds since 2000-01-01,)    <-> naive datetime | "infinity" | ...
    timestamptz   (microseconds since 2000-01-01 UTC,)<-> aware datetime (UTC) | ...
    interval      (months, days, microseconds)        <-> Interval

Values outside Python's years 1-9999 (PostgreSQL allows more) are read as a string giving
their exact offset from 2000-01-01, since no datetime can hold them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

EPOCH_DATE = dt.date(2000, 1, 1)
EPOCH = dt.datetime(2000, 1, 1)
EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_DATE_INF, _DATE_NINF = 2**31 - 1, -(2**31)
_TS_INF, _TS_NINF = 2**63 - 1, -(2**63)
INFINITIES = ("infinity", "-infinity")
_US = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Interval:
    """A PostgreSQL interval as it is stored: months, days and microseconds, kept apart
    (a month is not 30 days, and a day is not 24 hours across a DST change)."""

    months: int = 0
    days: int = 0
    microseconds: int = 0

    def isoformat(self) -> str:
        """ISO 8601 duration, each part signed as PostgreSQL keeps it: "P1Y2M3DT4H5M6.5S"."""
        years, months = divmod(abs(self.months), 12)
        sign_m = "-" if self.months < 0 else ""
        parts = "P"
        if years:
            parts += f"{sign_m}{years}Y"
        if months:
            parts += f"{sign_m}{months}M"
        if self.days:
            parts += f"{self.days}D"
        us = abs(self.microseconds)
        sign_t = "-" if self.microseconds < 0 else ""
        hours, rest = divmod(us, 3_600_000_000)
        minutes, rest = divmod(rest, 60_000_000)
        seconds, micros = divmod(rest, 1_000_000)
        time = ""
        if hours:
            time += f"{sign_t}{hours}H"
        if minutes:
            time += f"{sign_t}{minutes}M"
        if seconds or micros:
            frac = f".{micros:06d}".rstrip("0") if micros else ""
            time += f"{sign_t}{seconds}{frac}S"
        if time:
            parts += "T" + time
        return parts if parts != "P" else "PT0S"


_NUM = r"([+-]?[0-9]+(?:\.[0-9]+)?)"
_DURATION = re.compile(rf"([+-])?P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
                       rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?")


def parse_interval(text: str) -> Interval:
    """ISO 8601 duration (weeks and fractions allowed on the smallest unit); ValueError."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if not m or text.rstrip("T").endswith("P") or text.endswith("T"):
        raise ValueError("expected an ISO 8601 duration such as P1Y2M3DT4H5M6S")
    sign = -1 if m.group(1) == "-" else 1
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups()[1:])
    if any(v != int(v) for v in (y, mo, w, d, h, mi)):
        raise ValueError("only seconds may have a fraction")
    months = int(y) * 12 + int(mo)
    days = int(w) * 7 + int(d)
    micros = int(h) * 3_600_000_000 + int(mi) * 60_000_000 + round(s * 1_000_000)
    result = Interval(sign * months, sign * days, sign * micros)
    if abs(result.months) >= 2**31 or abs(result.days) >= 2**31 or \
            abs(result.microseconds) >= 2**63:
        raise ValueError("out of range for interval")
    return result


def _out_of_range(micros: int) -> str:
    """A timestamp Python cannot hold (year < 1 or > 9999), exactly, if not prettily."""
    return f"out of range: {micros} microseconds from 2000-01-01"


def _encode_date(value: Any) -> tuple[int]:
    if value == "infinity":
        return (_DATE_INF,)
    if value == "-infinity":
        return (_DATE_NINF,)
    return ((value - EPOCH_DATE).days,)


def _decode_date(data: tuple[int]) -> Any:
    days = data[0]
    if days == _DATE_INF:
        return "infinity"
    if days == _DATE_NINF:
        return "-infinity"
    try:
        return EPOCH_DATE + dt.timedelta(days=days)
    except OverflowError:
        return _out_of_range(days * 86_400_000_000)


def _encoder(epoch: dt.datetime) -> Any:
    def encode(value: Any) -> tuple[int]:
        if type(value) is int:  # already microseconds since 2000-01-01 (columnar ingest)
            return (value,)
        if value == "infinity":
            return (_TS_INF,)
        if value == "-infinity":
            return (_TS_NINF,)
        return ((value - epoch) // _US,)
    return encode


def _decoder(epoch: dt.datetime) -> Any:
    def decode(data: tuple[int]) -> Any:
        micros = data[0]
        if micros == _TS_INF:
            return "infinity"
        if micros == _TS_NINF:
            return "-infinity"
        try:
            return epoch + dt.timedelta(microseconds=micros)
        except OverflowError:
            return _out_of_range(micros)
    return decode


def _encode_interval(value: Any) -> tuple[int, int, int]:
    if isinstance(value, dt.timedelta):
        return (0, value.days, value.seconds * 1_000_000 + value.microseconds)
    return (value.months, value.days, value.microseconds)


def _decode_interval(data: tuple[int, int, int]) -> Interval:
    return Interval(*data)


async def install(conn: asyncpg.Connection) -> None:
    codecs = [
        ("date", _encode_date, _decode_date),
        ("timestamp", _encoder(EPOCH), _decoder(EPOCH)),
        ("timestamptz", _encoder(EPOCH_UTC), _decoder(EPOCH_UTC)),
        ("interval", _encode_interval, _decode_interval),
    ]
    for name, encoder, decoder in codecs:
        await conn.set_type_codec(name, schema="pg_catalog", encoder=encoder, decoder=decoder,
                                  format="tuple")
