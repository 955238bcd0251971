"""Configuration of the files source: which file holds each stream and how its columns map.

The default column names are those of the sample export (``crmsync.sample``), so a demo
configuration needs only the paths. Mappings go from crmsync's canonical field name to
the file's own column (a dotted path in JSON); every canonical name is checked when the
configuration loads, so a typo is reported with its key rather than read as empty.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    """One stream's file. Subclasses fix the stream's canonical fields and default columns."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    REQUIRED: ClassVar[tuple[str, ...]] = ("external_id",)
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
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> the file's column name (dotted path in JSON); "
        "an empty string leaves a default column unmapped",
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

    @model_validator(mode="after")
    def _check_mapping(self) -> StreamFile:
        problems = _unknown("columns", self.columns, self.FIELDS)
        mapping = self.mapping()
        problems += [
            f"columns.{name}: required, but no column is mapped to it"
            for name in self.REQUIRED
            if name not in mapping
        ]
        if self.format is None:
            try:
                infer_format(self.path)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def mapping(self) -> dict[str, str]:
        """Canonical field -> column, defaults first, then ``columns``; empty names dropped."""
        merged = dict(self.DEFAULTS) if self.default_columns else {}
        merged.update(self.columns)
        return {name: column for name, column in merged.items() if column}

    def file_format(self) -> Format:
        return self.format or infer_format(self.path)


class LinedFile(StreamFile):
    """A stream whose records hold lines (order lines, cart items)."""

    LINE_FIELDS: ClassVar[tuple[str, ...]] = ()
    LINE_DEFAULTS: ClassVar[dict[str, str]] = {}

    lines: str = Field(
        "line_items",
        description="JSON: the key (dotted path) holding the list of line objects. CSV files "
        "have no such key: there each row is one line, and consecutive rows with the same id "
        "are one record (rows of one record must be adjacent)",
    )
    line_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical line field -> the line's column (key in each JSON line object, "
        "column in CSV); an empty string leaves a default unmapped",
    )

    @model_validator(mode="after")
    def _check_lines(self) -> LinedFile:
        problems = _unknown("line_columns", self.line_columns, self.LINE_FIELDS)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def line_mapping(self) -> dict[str, str]:
        merged = dict(self.LINE_DEFAULTS) if self.default_columns else {}
        merged.update(self.line_columns)
        return {name: column for name, column in merged.items() if column}


class CustomersFile(StreamFile):
    FIELDS = (
        "external_id", "email", "phone", "first_name", "last_name", "city", "region",
        "country", "postal_code", "address1", "language", "birthday", "created_at",
        "updated_at", "email_consent", "email_consent_at", "sms_consent", "sms_consent_at",
        "deleted",
    )  # fmt: skip
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


class OrdersFile(LinedFile):
    FIELDS = (
        "external_id", "customer_external_id", "email", "placed_at", "status", "currency",
        "total", "discount_total", "refunded_total", "updated_at",
    )  # fmt: skip
    REQUIRED = ("external_id", "placed_at", "status", "currency", "total")
    DEFAULTS = {
        "external_id": "id", "customer_external_id": "customer_id", "email": "email",
        "placed_at": "created_at", "updated_at": "updated_at", "status": "status",
        "currency": "currency", "total": "total_price", "discount_total": "total_discount",
        "refunded_total": "total_refunded",
    }  # fmt: skip
    LINE_FIELDS = ("sku", "product", "category", "quantity", "unit_price", "discount")
    LINE_DEFAULTS = {
        "sku": "sku", "product": "title", "category": "category", "quantity": "quantity",
        "unit_price": "price", "discount": "discount",
    }  # fmt: skip


class CartsFile(LinedFile):
    FIELDS = (
        "external_id", "customer_external_id", "email", "currency", "value", "created_at",
        "updated_at", "checkout_url", "converted",
    )  # fmt: skip
    REQUIRED = ("external_id", "currency", "value")
    DEFAULTS = {
        "external_id": "id", "customer_external_id": "customer_id", "email": "email",
        "created_at": "created_at", "updated_at": "updated_at", "converted": "completed_at",
        "currency": "currency", "value": "total_price", "checkout_url": "abandoned_checkout_url",
    }  # fmt: skip
    LINE_FIELDS = ("sku", "product", "category", "quantity", "unit_price")
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


def _unknown(key: str, given: dict[str, str], known: tuple[str, ...]) -> list[str]:
    return [
        f"{key}.{name}: {name!r} is not a canonical field here (known: {', '.join(known)})"
        for name in given
        if name not in known
    ]
