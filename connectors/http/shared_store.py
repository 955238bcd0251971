"""The Redis side of a shared rate budget: one atomic Lua script per operation.

Each script reads and writes one account's keys in a single step on the server, so any
number of processes on any number of machines can draw from the same budget without a
lock of their own:

- ``bucket``: the token bucket (a hash of ``tokens`` and ``updated``); answers how long
  the caller waits before its token is due, exactly as ``budget.TokenBucket.reserve``;
- ``gate``: the account's pause (a time) and its rolling windows (one sorted set of booked
  start times, as many of the latest kept as the largest window holds) and fixed windows
  (a hash each: the end, the count, whether an answer set the end, as
  ``fixed_window.FixedWindow`` keeps them); books the caller's start where every window
  allows it and answers its wait;
- ``fixed_learn``: an answer's reset and remaining count taken into a fixed window, as
  ``FixedWindow.learn`` takes them;
- ``pause``: pauses the account until a time, never shortening a longer pause;
- ``slot_take``, ``slot_renew``, ``slot_give``: concurrency slots as leases (a sorted set
  of holders by expiry time); a holder that stops renewing (a killed process) loses its
  slot when the lease runs out; a slot given back rings a bell (a short list) that
  waiting processes block on;
- ``daily_*``: the counters of ``budget.DailyAllowance`` in a hash, with the same rules.

Time is the Redis server's clock (``TIME``), the one clock every machine sees, unless the
caller passes ``now`` (a test's clock). Numbers travel as strings, since Redis turns a Lua
number into an integer reply. Keys live under ``crmsync:budget:{<digest>}:`` where the
digest is a SHA-256 of the account name, so no API key, nor anything derived from one
shorter than a hash, is stored; the braces keep an account's keys in one cluster slot.
Every key expires once it no longer matters, so an account that goes quiet leaves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from connectors.http.budget import Booking
from connectors.http.fixed_window import ROUNDING
from crmsync.errors import ConfigError

SOCKET_TIMEOUT = 10.0  # seconds; a budget operation is one round trip
CONNECT_TIMEOUT = 5.0
RETRIES = 2  # a connection dropped between two operations is opened again, twice at most

_LIB = """
local function now_of(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
local function ttl(seconds) return math.ceil(math.max(0, seconds) * 1000) + 60000 end
"""

_BUCKET = """
local now, rate, burst = now_of(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(held[1]), tonumber(held[2])
if not tokens then tokens, updated = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', num(tokens), 'updated', num(now))
redis.call('PEXPIRE', KEYS[1], ttl((burst - tokens) / rate))
if tokens >= 0 then return '0' end
return num(-tokens / rate)
"""

_GATE = """
local now = now_of(ARGV[1])
local wait = 0
local paused = tonumber(redis.call('GET', KEYS[1]))
if paused and paused > now then wait = paused - now end
local start, most, longest = now, 0, 0
local held = redis.call('ZCARD', KEYS[2])
local fixed, k = {}, 2
for i = 3, #ARGV - 3, 4 do
  local size, seconds = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local span, margin = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  most, longest = math.max(most, size), math.max(longest, seconds)
  local known = false
  if span > 0 then
    k = k + 1
    if redis.call('HEXISTS', KEYS[k], 'end') == 1 then
      known = true
      fixed[#fixed + 1] = {KEYS[k], size, span, margin}
    end
  end
  if not known and held >= size then
    local oldest = redis.call('ZRANGE', KEYS[2], -size, -size, 'WITHSCORES')
    start = math.max(start, tonumber(oldest[2]) + seconds)
  end
end
for _, f in ipairs(fixed) do start = place(now, f[1], f[2], f[3], f[4], start) end
if most > 0 then
  redis.call('ZADD', KEYS[2], num(start), ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(most + 1))
  redis.call('PEXPIRE', KEYS[2], ttl(start - now + longest))
  wait = math.max(wait, start - now)
end
return num(wait)
"""

_FIXED_LIB = f"""
local ROUNDING = {ROUNDING!r}
local function place(now, key, size, span, margin, start)
  local held = redis.call('HMGET', key, 'end', 'used')
  local ends, used = tonumber(held[1]), tonumber(held[2]) or 0
  local moved = false
  if start > ends - ROUNDING - margin then
    ends = ends + math.ceil((start - ends + ROUNDING + margin) / span) * span
    used, moved = 0, true
  end
  if used >= size then ends, used, moved = ends + span, 0, true end
  used = used + 1
  if moved then
    redis.call('HSET', key, 'end', num(ends), 'used', used, 'told', '0')
  else
    redis.call('HSET', key, 'used', used)
  end
  redis.call('PEXPIRE', key, ttl(ends - now + span))
  return math.max(start, ends - span + margin)
end
"""

_FIXED_LEARN = """
local now, reset = now_of(ARGV[1]), tonumber(ARGV[2])
local size, span = tonumber(ARGV[3]), tonumber(ARGV[4])
if reset > span + ROUNDING then return 0 end
local ends = now + reset
local held = redis.call('HMGET', KEYS[1], 'end', 'used', 'told')
local known, used = tonumber(held[1]), tonumber(held[2]) or 0
if not known then
  known = ends
  used = redis.call('ZCOUNT', KEYS[2], num(ends - span), '+inf')
elseif math.abs(ends - known) < span / 2 then
  if held[3] == '1' then
    known = math.min(ends, known)
  else
    known = math.min(ends, math.max(known, ends - ROUNDING))
  end
else
  return 0
end
if ARGV[5] ~= '' then used = math.max(used, size - tonumber(ARGV[5])) end
redis.call('HSET', KEYS[1], 'end', num(known), 'used', used, 'told', '1')
redis.call('PEXPIRE', KEYS[1], ttl(known - now + span))
return 1
"""

_PAUSE = """
local now, seconds = now_of(ARGV[1]), tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[1]))
if not paused or paused < now + seconds then
  redis.call('SET', KEYS[1], num(now + seconds), 'PX', ttl(seconds))
  return num(now + seconds)
end
return num(paused)
"""

_SLOT_TAKE = """
local now, size, lease = now_of(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if redis.call('ZCARD', KEYS[1]) >= size then return 0 end
redis.call('ZADD', KEYS[1], num(now + lease), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl(lease))
return 1
"""

_SLOT_RENEW = """
local now, lease = now_of(ARGV[1]), tonumber(ARGV[2])
local kept = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', num(now + lease), ARGV[i])
    kept = kept + 1
  end
end
if kept > 0 then redis.call('PEXPIRE', KEYS[1], ttl(lease)) end
return kept
"""

_SLOT_GIVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[2], 60000)
return 1
"""

_DAILY_LIB = """
local function field(name) return tonumber(redis.call('HGET', KEYS[1], name)) end
local function new_day(now)
  local ends = field('ends')
  if ends and now >= ends then
    redis.call('HDEL', KEYS[1], 'ends', 'base')
    redis.call('HSET', KEYS[1], 'base_from', (field('booked') or 0) + 1)
  end
end
local function left()
  local base = field('base')
  if not base then return nil end
  return math.max(0, base - (field('charged') or 0))
end
"""

_DAILY_KEEP = """
local now, reserve, ends_in = now_of(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
new_day(now)
redis.call('HSET', KEYS[1], 'reserve', reserve, 'ends', num(now + ends_in))
redis.call('PEXPIRE', KEYS[1], ttl(ends_in + 86400))
return 1
"""

_DAILY_BOOK = """
local now = now_of(ARGV[1])
new_day(now)
local ends, known, reserve = field('ends'), left(), field('reserve') or 0
if ends and known and known <= reserve then
  return {0, known, reserve, num(math.max(0, ends - now))}
end
local booked = redis.call('HINCRBY', KEYS[1], 'booked', 1)
local charged = 0
if ends then
  charged = 1
  redis.call('HINCRBY', KEYS[1], 'charged', 1)
end
return {1, booked, field('answered') or 0, charged}
"""

_DAILY_ANSWER = """
local now = now_of(ARGV[1])
new_day(now)
local open, charged, refused = ARGV[2] == '1', ARGV[3] == '1', ARGV[4] == '1'
if open and charged then
  if refused then
    redis.call('HINCRBY', KEYS[1], 'charged', -1)
  else
    redis.call('HINCRBY', KEYS[1], 'answered', 1)
  end
end
if ARGV[7] ~= '' and field('ends') then
  local base_from = field('base_from') or 0
  local number, before, counted
  if open then
    number, before = tonumber(ARGV[5]), tonumber(ARGV[6])
    counted = (charged and not refused) and 1 or 0
  else
    number, before, counted = math.max(field('booked') or 0, base_from), field('answered') or 0, 0
  end
  if number >= base_from then
    redis.call('HSET', KEYS[1], 'base', tonumber(ARGV[7]) + before + counted, 'base_from', number)
  end
end
return 1
"""

_DAILY_LEFT = """
new_day(now_of(ARGV[1]))
local known = left()
if known then return known end
return -1
"""

SCRIPTS = {
    "bucket": _LIB + _BUCKET,
    "gate": _LIB + _FIXED_LIB + _GATE,
    "fixed_learn": _LIB + _FIXED_LIB + _FIXED_LEARN,
    "pause": _LIB + _PAUSE,
    "slot_take": _LIB + _SLOT_TAKE,
    "slot_renew": _LIB + _SLOT_RENEW,
    "slot_give": _LIB + _SLOT_GIVE,
    "daily_keep": _LIB + _DAILY_LIB + _DAILY_KEEP,
    "daily_book": _LIB + _DAILY_LIB + _DAILY_BOOK,
    "daily_answer": _LIB + _DAILY_LIB + _DAILY_ANSWER,
    "daily_left": _LIB + _DAILY_LIB + _DAILY_LEFT,
}


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """Where one account's budget lives in Redis."""

    bucket: str
    pause: str
    window: str
    slots: str
    bell: str
    daily: str

    @classmethod
    def of(cls, account: str) -> AccountKeys:
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        root = f"crmsync:budget:{{{digest}}}:"
        return cls(
            *(root + part for part in ("bucket", "pause", "window", "slots", "bell", "daily"))
        )

    def fixed(self, seconds: float) -> str:
        """The hash of a fixed window ``seconds`` long: its end, its count, whether an
        answer in it has set its end."""
        return f"{self.window}:fixed:{seconds!r}"


@dataclass(frozen=True, slots=True)
class Window:
    """A window the gate keeps: at most ``size`` starts in any ``seconds``; with a
    ``span``, the vendor's fixed window of ``span`` seconds (``margin`` kept clear of each
    reset) that this rolling one stands in for until its end is known."""

    size: int
    seconds: float
    span: float = 0.0
    margin: float = 0.0


@dataclass(frozen=True, slots=True)
class Spent:
    """A booking refused: the calls left today are down to the reserve."""

    left: int
    reserve: int
    wait: float


def masked(url: str) -> str:
    """``url`` with its password (if any) as ``***``, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class SharedStore:
    """The scripts, bound to one Redis server; every failure to reach it becomes a
    ``ConfigError`` naming the setting ``key``: a budget that cannot be kept must stop
    the run rather than let each process spend the whole account's limit."""

    def __init__(self, url: str, *, key: str, client: redis.Redis | None = None) -> None:
        self.url, self.key, self.where = url, key, masked(url)
        try:
            self._redis = client or redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                health_check_interval=30,
                decode_responses=True,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
            )
        except ValueError as exc:
            raise self.unavailable(exc) from exc
        self._scripts = {name: self._redis.register_script(s) for name, s in SCRIPTS.items()}

    def unavailable(self, error: Exception) -> ConfigError:
        return ConfigError(
            f"the shared rate budget at {self.where} cannot be used: {error}",
            key=self.key,
            hint=(
                "start Redis there or correct the URL; a process that kept its own budget "
                "instead could, beside the others, exceed the vendor's limit for the account"
            ),
        )

    def ping(self) -> None:
        """Fails now, naming the setting, when the server cannot be used."""
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._scripts[name](keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc

    # -- the operations, typed ---------------------------------------------------------

    def bucket(self, key: str, now: str, rate: float, burst: int) -> float:
        return float(self.run("bucket", [key], [now, repr(rate), burst]))

    def gate(self, keys: AccountKeys, now: str, windows: Sequence[Window], member: str) -> float:
        """Waits for the pause and books a start in every window: a rolling one (``span``
        0) by the one sorted set of the latest starts that serves them all, as every start
        is in each; a fixed one by its own hash once ``fixed_learn`` has told its end
        (until then, as the rolling window of ``seconds`` that stands in for it)."""
        flat: list[Any] = []
        fixed: list[str] = []
        for window in windows:
            flat += [window.size, repr(window.seconds), repr(window.span), repr(window.margin)]
            if window.span > 0:
                fixed.append(keys.fixed(window.span))
        return float(self.run("gate", [keys.pause, keys.window, *fixed], [now, member, *flat]))

    def fixed_learn(
        self, keys: AccountKeys, now: str, window: Window, reset: float, remaining: float | None
    ) -> bool:
        """An answer said the fixed ``window`` resets in ``reset`` seconds, ``remaining``
        calls left, as ``FixedWindow.learn`` reads it; whether it was taken in."""
        args = [now, repr(reset), window.size, repr(window.span)]
        args.append("" if remaining is None else int(remaining))
        return bool(self.run("fixed_learn", [keys.fixed(window.span), keys.window], args))

    def pause(self, key: str, now: str, seconds: float) -> float:
        """Pauses until ``seconds`` from now at least; the time the pause now ends."""
        return float(self.run("pause", [key], [now, repr(seconds)]))

    def take_slot(self, key: str, now: str, size: int, lease: float, member: str) -> bool:
        return bool(self.run("slot_take", [key], [now, size, repr(lease), member]))

    def renew_slots(self, key: str, now: str, lease: float, members: list[str]) -> int:
        return int(self.run("slot_renew", [key], [now, repr(lease), *members]))

    def give_slot(self, keys: AccountKeys, size: int, member: str) -> bool:
        return bool(self.run("slot_give", [keys.slots, keys.bell], [member, size]))

    def wait_bell(self, key: str, timeout: float) -> None:
        """Blocks until a slot is given back (or ``timeout`` seconds pass)."""
        try:
            self._redis.blpop([key], timeout=timeout)
        except (redis.RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc

    def daily_keep(self, key: str, now: str, reserve: int, ends_in: float) -> None:
        self.run("daily_keep", [key], [now, reserve, repr(ends_in)])

    def daily_book(self, key: str, now: str) -> Booking | Spent:
        found = self.run("daily_book", [key], [now])
        if int(found[0]) == 0:
            return Spent(int(found[1]), int(found[2]), float(found[3]))
        return Booking(int(found[1]), int(found[2]), charged=bool(int(found[3])))

    def daily_answer(
        self, key: str, now: str, booking: Booking | None, *, refused: bool, left: int | None
    ) -> None:
        """Settles ``booking`` (a 429: ``refused``) and takes in the calls ``left`` today
        an answer reported, as ``DailyAllowance.settle`` and ``observe`` do."""
        flags = [
            "1" if booking is not None else "0",
            "1" if booking is not None and booking.charged else "0",
            "1" if refused else "0",
        ]
        number, before = (booking.number, booking.answered_before) if booking else (0, 0)
        args = [now, *flags, number, before, "" if left is None else left]
        self.run("daily_answer", [key], args)

    def daily_left(self, key: str, now: str) -> int | None:
        found = int(self.run("daily_left", [key], [now]))
        return None if found < 0 else found
