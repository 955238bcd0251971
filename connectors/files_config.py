"""Configuration of the files source: which file holds each stream and how its columns map.

The default column names are those of the sample export (``crmsync.sample``), so a demo
configuration needs only the paths. Mappings go from crmsync's canonical field name to
the file's own column (a dotted path in JSON), or to a field spec of the shared
record-mapping language (``connectors.records``: value maps, constants, defaults,
arithmetic over lines). The whole mapping is compiled when the configuration loads, so
a typo or a mapping ``run`` could not use is reported with its key rather than read as
empty.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.records import FieldSpec, MappingContext, MappingKeys, RowsSpec, mapping_issues
from connectors.records.fields import format_problem
from crmsync.contract import ConnectorConfig
from crmsync.normalize import ZoneName
from crmsync.records import Stream

Format = Literal["csv", "jsonl"]
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamFile(_Strict):
    """One stream's file. Subclasses fix the stream and its default columns."""

    STREAM: ClassVar[Stream]
    DEFAULTS: ClassVar[dict[str, str]] = {}

    path: str = Field(
        description="The export file; relative paths are read from the config file's directory. "
        "A .gz suffix is decompressed on the fly."
    )
    format: Format | None = Field(
        None, description="csv or jsonl (one JSON object per line); inferred from the extension"
    )
    delimiter: str = Field(
        ",", min_length=1, max_length=1, description="CSV field separator (CSV only)"
    )
    encoding: str = Field(
        "utf-8", description="Text encoding of the file; a UTF-8 byte-order mark is skipped"
    )
    updated_at: str | None = Field(
        None,
        description="The file's column (dotted path in JSON) holding each row's last change, "
        "used to read only rows changed since the last run; omit to read the whole file each run",
    )
    date_format: str = Field(
        "",
        description="strptime format of the file's date/times when they are not ISO 8601 "
        "or epoch seconds, e.g. '%d.%m.%Y %H:%M'",
    )
    default_columns: bool = Field(
        True,
        description="Start from the sample export's column names (see docs); false maps only "
        "what `columns` lists",
    )
    columns: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Canonical field -> the file's column name (dotted path in JSON) or a "
        "field spec such as { const = 'paid' } or { path = 'İzin', map = { ONAY = "
        "'subscribed' } } (docs/rest-source.md, Mapping); an empty string leaves a default "
        "column unmapped",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown text encoding {value!r}") from exc
        return value

    @field_validator("date_format")
    @classmethod
    def _usable_format(cls, value: str) -> str:
        problem = format_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_mapping(self) -> StreamFile:
        if self.format is None:
            try:
                infer_format(self.path)
            except ValueError as exc:
                raise ValueError(str(exc)) from exc
        problems = mapping_issues(
            self.STREAM, self.mapping(), self.rows(), keys=self.keys(""), context=self.context()
        )
        if problems:
            raise ValueError("; ".join(map(str, problems)))
        return self

    def mapping(self) -> dict[str, FieldSpec]:
        """Canonical field -> spec, defaults first, then ``columns``; empty ones dropped."""
        merged = {name: FieldSpec(path=column) for name, column in self.DEFAULTS.items()}
        if not self.default_columns:
            merged = {}
        merged.update(self.columns)
        return {name: spec for name, spec in merged.items() if spec.mapped()}

    def rows(self) -> RowsSpec | None:
        """The record's lines, for streams that have them and map any line column."""
        return None

    def keys(self, key: str) -> MappingKeys:
        """Where this stream's mapping lives under ``key`` (``sources.<name>.<stream>``)."""
        prefix = f"{key}." if key else ""
        return MappingKeys(f"{prefix}columns")

    def context(self, **spelling: Any) -> MappingContext:
        """How the file spells values (``spelling``: the source's tz and phone region)."""
        birthday = getattr(self, "birthday_format", "") or None
        return MappingContext(
            time_format=self.date_format or None,
            birthday_format=birthday,
            flat=self.file_format() == "csv",
            source_names=True,
            **spelling,
        )

    def id_column(self) -> str:
        return self.mapping()["external_id"].first_path()

    def file_format(self) -> Format:
        return self.format or infer_format(self.path)


class LinedFile(StreamFile):
    """A stream whose records hold lines (order lines, cart items)."""

    LINE_DEFAULTS: ClassVar[dict[str, str]] = {}

    lines: str = Field(
        "line_items",
        description="JSON: the key (dotted path) holding the list of line objects. CSV files "
        "have no such key: there each row is one line, and consecutive rows with the same id "
        "are one record (rows of one record must be adjacent)",
    )
    line_columns: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Canonical line field -> the line's column (key in each JSON line object, "
        "column in CSV) or a field spec, e.g. unit_price = { path = 'Tutar', per = 'Adet' }; "
        "an empty string leaves a default unmapped",
    )

    def line_mapping(self) -> dict[str, FieldSpec]:
        merged = {name: FieldSpec(path=column) for name, column in self.LINE_DEFAULTS.items()}
        if not self.default_columns:
            merged = {}
        merged.update(self.line_columns)
        return {name: spec for name, spec in merged.items() if spec.mapped()}

    def rows(self) -> RowsSpec | None:
        lines = self.line_mapping()
        return RowsSpec(path=self.lines, fields=lines) if lines else None

    def keys(self, key: str) -> MappingKeys:
        prefix = f"{key}." if key else ""
        label = self.lines if self.file_format() == "jsonl" else None
        return MappingKeys(f"{prefix}columns", f"{prefix}line_columns", f"{prefix}lines", label)


class CustomersFile(StreamFile):
    STREAM = Stream.CUSTOMERS
    DEFAULTS = {
        "external_id": "customer_id", "email": "email", "first_name": "first_name",
        "last_name": "last_name", "phone": "phone", "city": "city", "region": "district",
        "country": "country", "birthday": "birth_date", "created_at": "created_at",
        "updated_at": "updated_at", "email_consent": "accepts_email_marketing",
        "email_consent_at": "email_marketing_updated_at",
        "sms_consent": "accepts_sms_marketing", "sms_consent_at": "sms_marketing_updated_at",
        "deleted": "deleted",
    }  # fmt: skip

    birthday_format: str = Field(
        "", description="strptime format of birthdays when they are not ISO (YYYY-MM-DD)"
    )

    @field_validator("birthday_format")
    @classmethod
    def _usable_birthday_format(cls, value: str) -> str:
        return cls._usable_format(value)


class OrdersFile(LinedFile):
    STREAM = Stream.ORDERS
    DEFAULTS = {
        "external_id": "id", "customer_external_id": "customer_id", "email": "email",
        "placed_at": "created_at", "updated_at": "updated_at", "status": "status",
        "currency": "currency", "total": "total_price", "discount_total": "total_discount",
        "refunded_total": "total_refunded",
    }  # fmt: skip
    LINE_DEFAULTS = {
        "sku": "sku", "product": "title", "category": "category", "quantity": "quantity",
        "unit_price": "price", "discount": "discount",
    }  # fmt: skip


class CartsFile(LinedFile):
    STREAM = Stream.CARTS
    DEFAULTS = {
        "external_id": "id", "customer_external_id": "customer_id", "email": "email",
        "created_at": "created_at", "updated_at": "updated_at", "converted": "completed_at",
        "currency": "currency", "value": "total_price", "checkout_url": "abandoned_checkout_url",
    }  # fmt: skip
    LINE_DEFAULTS = {
        "sku": "sku", "product": "title", "category": "category", "quantity": "quantity",
        "unit_price": "price",
    }  # fmt: skip


class FilesSourceConfig(ConnectorConfig):
    """``kind = "files"``: customers, orders and carts from export files (CSV or JSON lines)."""

    kind: Literal["files"] = Field("files", description="Always 'files' for this source")
    timezone: ZoneName | None = Field(
        None,
        description="IANA time zone of times written without an offset, e.g. "
        "'Europe/Istanbul'; defaults to the configuration's default time zone",
    )
    customers: CustomersFile | None = Field(None, description="The customers export")
    orders: OrdersFile | None = Field(None, description="The orders export")
    carts: CartsFile | None = Field(None, description="The carts (checkouts) export")

    @model_validator(mode="after")
    def _some_stream(self) -> FilesSourceConfig:
        if not self.files():
            raise ValueError("configure at least one of customers, orders or carts")
        return self

    def files(self) -> dict[Stream, StreamFile]:
        found: dict[Stream, StreamFile | None] = {
            Stream.CUSTOMERS: self.customers,
            Stream.ORDERS: self.orders,
            Stream.CARTS: self.carts,
        }
        return {stream: spec for stream, spec in found.items() if spec is not None}


def infer_format(path: str) -> Format:
    suffixes = [s.lower() for s in PurePath(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; set format")
    return found
