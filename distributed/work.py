"""What a task message carries and what a slice's planning sends back: plain JSON values.

A message names the configuration every worker reads (the same path on every machine),
the pipeline and the run; the worker builds sources, destinations, mappings and segment
rules from that file itself, so no secret and no pickled object crosses the broker. A
plan task also carries the run's fixed values (its ``as_of``, its policy, whether it
plans only the run's scope) and the fingerprint of the configuration that shapes plans
(``crmsync.incremental``): a worker whose file changed since the run began refuses to
plan rather than plan differently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from crmsync.config import PipelineSpec
from crmsync.diff import Policy
from crmsync.profile_scope import ProfileContext
from engine.planner import Tally
from state.timeutil import to_ms

# the task names workers register and the coordinator sends by
PULL, PREPARE, PLAN, PUSH, COLLECT = (
    "crmsync.pull_stream",
    "crmsync.prepare_destination",
    "crmsync.plan_slice",
    "crmsync.push_batch",
    "crmsync.collect_jobs",
)


@dataclass(frozen=True, slots=True)
class Work:
    """Whose task it is: the configuration (a file, or a directory with ``store``), the
    pipeline and the run."""

    config: str
    store: str
    pipeline: str
    run: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Work:
        return cls(str(data["config"]), str(data["store"]), str(data["pipeline"]), int(data["run"]))


@dataclass(frozen=True, slots=True)
class PlanArgs:
    """A run's fixed planning values, the same for every slice."""

    as_of: str  # ISO 8601
    policy: dict[str, int | None]  # crmsync.diff.Policy's fields
    samples: int
    fingerprint: str
    scoped: bool  # incremental: each slice plans only the run's scope within it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> PlanArgs:
        return cls(
            str(data["as_of"]),
            dict(data["policy"]),
            int(data["samples"]),
            data["fingerprint"],
            # a message published before ``scoped`` existed: those versions planned
            # every person of the slice
            bool(data.get("scoped", False)),
        )

    def as_of_time(self) -> datetime:
        return datetime.fromisoformat(self.as_of)

    def the_policy(self) -> Policy:
        p = self.policy
        return Policy(
            max_attempts=int(p["max_attempts"] or 0),
            now_ms=int(p["now_ms"] or 0),
            force_before_ms=p.get("force_before_ms"),
            force_since_ms=p.get("force_since_ms"),
        )


def plan_args(
    policy: Policy, as_of: datetime, samples: int, fingerprint: str, *, scoped: bool
) -> PlanArgs:
    return PlanArgs(as_of.isoformat(), asdict(policy), samples, fingerprint, scoped)


def pull_key(source: str, stream: str) -> str:
    return f"pull/{source}/{stream}"


def prepare_key(destination: str) -> str:
    return f"prepare/{destination}"


def ready_key(destination: str) -> str:
    """The row of what the run's preparation of ``destination`` found once its groups
    were made ready (``PreparedOnce.expect``), written by the coordinator: the workers'
    destinations take it over (``loaded.destination_of``)."""
    return f"ready/{destination}"


def plan_key(part: int) -> str:
    return f"plan/{part}"


def push_key(destination: str, part: int, batch: int) -> str:
    return f"push/{destination}/{part}/{batch}"


def collect_key(destination: str) -> str:
    return f"collect/{destination}"


def profile_context(spec: PipelineSpec, as_of: datetime) -> ProfileContext:
    """The run's profile context, as ``engine.plan_run`` builds it (every destination of
    the pipeline is a consent scope)."""
    sources = tuple(s.name for s in spec.sources)
    return ProfileContext(
        sources=sources,
        consent_scopes=sources + tuple(d.name for d in spec.destinations),
        currency=spec.currency,
        as_of_ms=to_ms(as_of) or 0,
        settings=spec.settings.profile,
    )


def tally_data(tally: Tally) -> dict[str, Any]:
    return {
        "profiles": tally.profiles,
        "foreign_orders": tally.foreign_orders,
        "segments": dict(tally.segments),
        "counts": {name: dict(counts) for name, counts in tally.counts.items()},
        "samples": tally.samples,
        "invalid": tally.invalid,
    }


def tally_of(data: dict[str, Any]) -> Tally:
    return Tally(
        profiles=int(data["profiles"]),
        foreign_orders=int(data["foreign_orders"]),
        segments=Counter(data["segments"]),
        counts={name: Counter(counts) for name, counts in data["counts"].items()},
        samples={name: list(found) for name, found in data["samples"].items()},
        invalid={name: list(keys) for name, keys in data["invalid"].items()},
    )
