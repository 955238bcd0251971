"""The state database's tables (SQLAlchemy Core), the one place the schema is described.

Conventions, chosen for speed and portability between SQLite and PostgreSQL:

- times are integers: milliseconds since the Unix epoch, UTC (window arithmetic in SQL is
  plain integer comparison on both engines);
- money is an integer in the currency's minor unit (kuruş for TRY), so sums are exact;
- person keys sort byte-wise on both engines (``COLLATE "C"`` on PostgreSQL), because the
  profile builder merge-joins several key-ordered streams in Python;
- orders and carts carry their person's key, kept at write time (``staging``), and the
  per-order values the profile metrics need, so the profile streams are plain index scans
  in key order: no join, no computed key and no sort when a run reads them.

Alembic migrations in ``state/migrations`` create exactly these tables; a test checks that
the migrated database matches this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
    text,
)

metadata = MetaData()

# byte-wise ordering on PostgreSQL, SQLite's BINARY default elsewhere
KEY = String(320).with_variant(String(320, collation="C"), "postgresql")
ID = String(128)
SOURCE = String(64)

customers = Table(
    "customers",
    metadata,
    Column("source", SOURCE, primary_key=True),
    Column("external_id", ID, primary_key=True),
    Column("person_key", KEY, nullable=False),
    Column("email", String(254)),
    Column("phone", String(20)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("city", String(255)),
    Column("region", String(255)),
    Column("country", String(2)),
    Column("postal_code", String(32)),
    Column("address1", String(255)),
    Column("language", String(16)),
    Column("birthday", Date),
    Column("created_at", BigInteger),
    Column("updated_at", BigInteger),
    Column("email_consent", String(16), nullable=False, default="none"),
    Column("email_consent_at", BigInteger),
    Column("sms_consent", String(16), nullable=False, default="none"),
    Column("sms_consent_at", BigInteger),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("staged_at", BigInteger, nullable=False),
    Column("content_hash", String(32)),  # of the staged content, to tell same-time versions
    Index("ix_customers_email", "email"),
    Index("ix_customers_phone", "phone"),
    Index("ix_customers_person", "person_key", "source", "external_id"),
    Index("ix_customers_staged", "staged_at"),  # what arrived since a planning
)

# The profile stream reads customers in key order. On SQLite from a covering index alone,
# as for orders below (a table look-up per customer costs more than the index's space);
# the narrow index above stays for counting and cutting the key space into slices.
CUSTOMERS_PROFILE_INDEX = "ix_customers_profile"
CUSTOMERS_PROFILE_COLUMNS = (
    "person_key",
    "source",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "region",
    "country",
    "postal_code",
    "address1",
    "language",
    "birthday",
    "created_at",
    "updated_at",
    "email_consent",
    "email_consent_at",
    "sms_consent",
    "sms_consent_at",
    "deleted",
)
Index(CUSTOMERS_PROFILE_INDEX, *(customers.c[n] for n in CUSTOMERS_PROFILE_COLUMNS)).ddl_if(
    dialect="sqlite"
)

orders = Table(
    "orders",
    metadata,
    Column("source", SOURCE, primary_key=True),
    Column("external_id", ID, primary_key=True),
    Column("customer_external_id", ID),
    Column("email", String(254)),
    Column("placed_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False, default=0),
    Column("refunded_minor", BigInteger, nullable=False, default=0),
    Column("item_count", Integer, nullable=False, default=0),
    Column("categories", Text),  # distinct categories of the lines, joined by "|"
    Column("staged_at", BigInteger, nullable=False),
    Column("content_hash", String(32)),  # of the staged content, to tell same-time versions
    # the customer's key when staged, else e:<email>, else s:<source>:<customer id>; None
    # for an order with neither (it belongs to nobody); re-keyed with its customer
    Column("person_key", KEY),
    Column("counted", Boolean, nullable=False, server_default=false()),  # not cancelled/refunded
    Column("net_minor", BigInteger, nullable=False, server_default=text("0")),  # total - refunded
    Column("discounted", Boolean, nullable=False, server_default=false()),  # any discount
    # when it reached a status, where the source says (refunded: the latest refund); the
    # events' times, else updated_at (migration 0010)
    Column("fulfilled_at", BigInteger),
    Column("cancelled_at", BigInteger),
    Column("refunded_at", BigInteger),
    Index("ix_orders_customer", "source", "customer_external_id"),
    Index("ix_orders_staged", "staged_at"),  # what arrived since a planning
)

# The profile stream reads orders in key order. On SQLite from a covering index alone
# (saves a table look-up per order); PostgreSQL limits an index entry to about 2.7 kB,
# which a long category list could pass, so there the index holds the key only.
ORDERS_PERSON_INDEX = "ix_orders_person"
_ORDERS_PERSON_COLUMNS = (
    "person_key",
    "source",
    "currency",
    "placed_at",
    "counted",
    "net_minor",
    "discounted",
    "updated_at",
    "categories",
)
Index(ORDERS_PERSON_INDEX, *(orders.c[n] for n in _ORDERS_PERSON_COLUMNS)).ddl_if(dialect="sqlite")
Index(f"{ORDERS_PERSON_INDEX}_pg", orders.c.person_key).ddl_if(dialect="postgresql")

order_lines = Table(
    "order_lines",
    metadata,
    Column("source", SOURCE, primary_key=True),
    Column("order_external_id", ID, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(128)),
    Column("product", String(255)),
    Column("category", String(255)),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False, default=0),
)

carts = Table(
    "carts",
    metadata,
    Column("source", SOURCE, primary_key=True),
    Column("external_id", ID, primary_key=True),
    Column("customer_external_id", ID),
    Column("email", String(254)),
    Column("currency", String(3), nullable=False),
    Column("value_minor", BigInteger, nullable=False),
    Column("item_count", Integer, nullable=False, default=0),
    Column("checkout_url", Text),
    Column("converted", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger),
    Column("updated_at", BigInteger),
    Column("items", Text),  # JSON list of {sku, product, category, quantity, unit_price}
    Column("staged_at", BigInteger, nullable=False),
    Column("content_hash", String(32)),  # of the staged content, to tell same-time versions
    Column("person_key", KEY),  # as for orders
    Index("ix_carts_customer", "source", "customer_external_id"),
    Index("ix_carts_person", "person_key", "source", "external_id"),
    Index("ix_carts_staged", "staged_at"),  # what arrived since a planning
)
# carts whose last change lies in a range: those that crossed the abandonment or the
# expiry time since the last derivation of events (migration 0010). Without ``source``:
# an index led by it is a candidate for every query that filters on the source alone,
# and PostgreSQL took it for the re-key update of a small table.
CART_CHANGED = func.coalesce(carts.c.updated_at, carts.c.created_at)
Index("ix_carts_changed", CART_CHANGED)

cursors = Table(
    "cursors",
    metadata,
    Column("connector", SOURCE, primary_key=True),  # a source, or a destination's read-back
    Column("stream", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),  # epoch ms of the newest record taken
    Column("updated_at", BigInteger, nullable=False),
)

# Per source stream, the token a ``Versioned`` source gave for it before its last complete
# read that left nothing for later, stored with the cursor: the same token next time means
# the stream has not changed and is not read (migration 0008).
source_versions = Table(
    "source_versions",
    metadata,
    Column("connector", SOURCE, primary_key=True),
    Column("stream", String(32), primary_key=True),
    Column("version", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("person_key", KEY, primary_key=True),
    Column("payload_hash", String(32), nullable=False),
    Column("payload", Text),  # JSON of the acknowledged fields, for diffs in `plan` and `status`
    # owned group memberships (tags, lists), sorted, "\n"-joined
    Column("memberships", Text, nullable=False, default=""),
    Column("remote_id", String(128)),
    # synced | archived (an archive or a delete was acknowledged)
    Column("status", String(16), nullable=False),
    Column("acked_at", BigInteger, nullable=False),
    Column("run_id", Integer),
)

# Sent, not yet acknowledged: written in the transaction before a batch goes out and
# removed by its acknowledgement, so a crash in between leaves "may be applied" behind.
in_flight = Table(
    "in_flight",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("person_key", KEY, primary_key=True),
    Column("action", String(16), nullable=False),  # upsert | archive | delete
    # every owned group the person may be in at the destination, sorted, "\n"-joined
    Column("possible", Text, nullable=False, default=""),
    Column("job", String(128)),  # an asynchronous job to collect; None: nothing to wait for
    # JSON of the whole change, to settle a job with; "" while the person waits for none
    Column("change", Text, nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("run_id", Integer),
    Index("ix_in_flight_job", "destination", "job"),
)

failures = Table(
    "failures",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("person_key", KEY, primary_key=True),
    Column("reason_class", String(16), nullable=False),  # failed | rejected | compliance
    Column("message", Text, nullable=False),
    Column("payload_hash", String(32), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", BigInteger, nullable=False),
    Column("last_failed_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger),  # None: not retried (rejected, compliance, cap reached)
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # scheduled | manual | backfill
    Column(
        "status", String(16), nullable=False
    ),  # running | succeeded | partial | failed | interrupted
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("as_of", BigInteger, nullable=False),
    Column("force_before", BigInteger),  # backfill: re-push everyone acked before this
    Column("force_since", BigInteger),  # backfill --since: only people active since this
    Column("counts", Text, nullable=False, default="{}"),  # JSON
    Column("error", Text),
    Index("ix_runs_pipeline", "pipeline", "id"),
)

consent_events = Table(
    "consent_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person_key", KEY, nullable=False),
    Column("email", String(254)),
    Column("channel", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(64), nullable=False),  # e.g. "mailchimp:newsletter"
    Column("reason", Text, nullable=False, default=""),
    Column("occurred_at", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Index("ix_consent_person", "person_key", "occurred_at"),
    Index("ix_consent_recorded", "recorded_at"),  # recorded since a planning
    Index(
        "uq_consent_event", "person_key", "channel", "source", "occurred_at", "state", unique=True
    ),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("source", SOURCE, primary_key=True),
    Column("stream", String(16), primary_key=True),
    Column("record_key", String(160), primary_key=True),  # external id, or a digest of the raw row
    Column("field", String(64), primary_key=True),
    Column("action", String(16), nullable=False),  # quarantined | corrected
    Column("external_id", ID),
    Column("reason", Text, nullable=False),
    Column("excerpt", Text, nullable=False, default=""),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("times_seen", Integer, nullable=False, default=1),
)

# Staged records that the last run of a pipeline did not send anywhere, and why: the
# people a destination could not address, with their records, the orders and carts of
# nobody, and those in another currency. Replaced as a whole by a run that names a
# different set (quarantined records stay in ``quarantine``).
not_synced = Table(
    "not_synced",
    metadata,
    Column("pipeline", String(64), primary_key=True),
    Column("reason", String(32), primary_key=True),  # crmsync.not_synced.Reason
    Column("source", SOURCE, primary_key=True),
    Column("stream", String(16), primary_key=True),
    Column("record_key", ID, primary_key=True),  # the staged record's external id
    Column("person_key", KEY),  # None: the record belongs to nobody
    Column("customer_id", ID),  # an order's or cart's customer, as the source names it
    # the destinations that could not address its person, "\n"-joined
    Column("destinations", Text, nullable=False, default=""),
)

# Per pipeline, the run that last named its records and a digest of that set, so that a
# run naming the same set again writes nothing.
not_synced_sets = Table(
    "not_synced_sets",
    metadata,
    Column("pipeline", String(64), primary_key=True),
    Column("digest", String(32), nullable=False),
    Column("records", Integer, nullable=False),
    Column("run_id", Integer),
    Column("named_at", BigInteger, nullable=False),
)

# Per pipeline, each person its last planning covered: the earliest instant at which
# their profile, segments or mapped fields can change with time alone (None: never), and
# their segments, "\n"-joined, so that a run recomputing only some people still reports
# every segment's size (crmsync.incremental).
planned = Table(
    "planned",
    metadata,
    Column("pipeline", String(64), primary_key=True),
    Column("person_key", KEY, primary_key=True),
    Column("next_at", BigInteger),
    Column("segments", Text),  # None: nobody yet, until a row dated later (next_at) counts
    # the lasting skips, "<destination>=<decision>" "\n"-joined (None: none), e.g. invalid
    Column("skips", Text),
    Index("ix_planned_next", "pipeline", "next_at"),
)

# Per pipeline, its last planning: what shaped it (a digest of the configuration that
# decides plans), its as_of, when it began (records staged since are planned again), how
# far it had read ``touched``, every segment's size and lasting skip's count (JSON), how
# many people it planned and the orders in another currency than the pipeline's.
plannings = Table(
    "plannings",
    metadata,
    Column("pipeline", String(64), primary_key=True),
    Column("fingerprint", String(32), nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("touched_upto", BigInteger, nullable=False),
    Column("totals", Text, nullable=False, default="{}"),
    Column("profiles", BigInteger, nullable=False, default=0),  # people planned
    Column("foreign_orders", BigInteger, nullable=False, default=0),  # not in its currency
)

# The old key of every customer, order and cart whose person key changed (and p:<old
# phone> of a customer whose phone changed), written by triggers on those tables
# (migration 0007), so the person a record leaves is planned again whichever code
# re-keyed it. Ids only grow (AUTOINCREMENT on SQLite).
touched = Table(
    "touched",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("person_key", KEY, nullable=False),
    sqlite_autoincrement=True,
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(80), primary_key=True),  # "pipeline:<name>"
    Column("holder", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# Events (issue 14, migration 0009). Per destination and event key (``crmsync.events``):
# what it acknowledged, what was sent and not yet answered, and what it refused or failed
# (retried under the pipeline's cap, as people are). Each row names its record (source,
# kind, record id) so a retry or a crash's leftovers re-derive just those records, and a
# cart whose checkout was acknowledged can be closed when it converts or disappears.
EVENT_KEY = String(320)

event_ledger = Table(
    "event_ledger",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("event_key", EVENT_KEY, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source", SOURCE, nullable=False),
    Column("record_id", ID, nullable=False),
    Column("person_key", KEY),
    Column("payload_hash", String(32), nullable=False),
    Column("remote_id", String(128)),
    Column("historical", Boolean, nullable=False, default=False),
    Column("acked_at", BigInteger, nullable=False),
    Column("run_id", Integer),
    Index("ix_event_ledger_record", "destination", "kind", "source", "record_id"),
)

event_in_flight = Table(
    "event_in_flight",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("event_key", EVENT_KEY, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source", SOURCE, nullable=False),
    Column("record_id", ID, nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("run_id", Integer),
)

event_failures = Table(
    "event_failures",
    metadata,
    Column("destination", SOURCE, primary_key=True),
    Column("event_key", EVENT_KEY, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source", SOURCE, nullable=False),
    Column("record_id", ID, nullable=False),
    Column("reason_class", String(16), nullable=False),  # failed | rejected | compliance
    Column("message", Text, nullable=False),
    Column("payload_hash", String(32), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", BigInteger, nullable=False),
    Column("last_failed_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger),  # None: not retried (refused, or the cap reached)
    Index("ix_event_failures_due", "destination", "next_attempt_at"),
)

# Per pipeline, how far its events were derived: records staged up to ``staged_upto``
# and carts abandoned by ``as_of``. Moved only after every destination took the run's
# events, so a crash or a destination that could take no more derives them again.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("pipeline", String(64), primary_key=True),
    Column("staged_upto", BigInteger, nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
