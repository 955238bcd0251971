"""The TOML side of the language: a field spec, and the nested rows of a record.

A field is written as a bare path (``email = "billing.email"``) or as a table of the keys
below; both load as a ``FieldSpec``. Taking the string in a before-validator (rather than
a ``str | FieldSpec`` union) keeps a mistake in a field's table reported once, under its
own key, not once per union member. Whether a spec makes sense for its canonical field
(a format on a phone, arithmetic on an e-mail) is checked when the stream is compiled,
since only then is the field known.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crmsync.normalize import ZoneName

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """How one canonical field is read from a raw row; a plain string is its path."""

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    path: str | list[str] = Field(
        default="",
        description="Where the value is: a column, a key or a dotted path (billing.email, "
        "items.0.sku, meta_data[key=newsletter].value); a list of paths takes the first "
        "non-empty one; '' leaves the field unmapped",
    )
    const: Scalar | None = Field(
        default=None, description="A constant value for every record, instead of a path"
    )
    default: Scalar | None = Field(
        default=None, description="The value used when the path finds nothing (or only '')"
    )
    null_if: list[str] = Field(
        default_factory=list,
        description="Raw values that mean 'none', e.g. ['0'] for a guest's customer id",
    )
    map: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Translate raw values, e.g. { ONAY = 'subscribed', RET = 'unsubscribed' }; "
        "values not listed pass unchanged",
    )
    format: str | None = Field(
        default=None,
        description="Dates and times: a strptime format such as '%d.%m.%Y %H:%M', or 'epoch' "
        "(seconds) / 'epoch_ms' (milliseconds); default ISO 8601 or epoch by magnitude",
    )
    timezone: ZoneName | None = Field(
        default=None, description="Zone of naive times at this path (e.g. UTC for *_gmt fields)"
    )
    sum: FieldSpec | None = Field(
        default=None,
        description="The path holds a list: add up this path (or field spec) over its items",
    )
    times: str | None = Field(default=None, description="Multiply by the number at this path")
    plus: list[str] = Field(default_factory=list, description="Add the amounts at these paths")
    minus: list[str] = Field(
        default_factory=list, description="Subtract the amounts at these paths (subtotal - total)"
    )
    per: str | None = Field(
        default=None, description="Divide by the number at this path (a line's quantity)"
    )
    abs: bool = Field(default=False, description="Take the absolute value (refunds listed < 0)")

    @field_validator("plus", "minus", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _const_alone(self) -> FieldSpec:
        if self.const is not None and (self.paths() or self.default is not None):
            raise ValueError("const replaces path and default: give one or the other")
        if self.sum is not None and not self.paths():
            raise ValueError("sum needs the path of the list to add up")
        return self

    def paths(self) -> list[str]:
        """The non-empty paths, in the order they are tried."""
        found = [self.path] if isinstance(self.path, str) else list(self.path)
        return [path for path in found if path]

    def mapped(self) -> bool:
        """False for a spec that reads nothing (``""``): the field is left unmapped."""
        return bool(self.paths()) or self.const is not None or self.default is not None

    def arithmetic(self) -> bool:
        return bool(self.sum or self.times or self.plus or self.minus or self.per or self.abs)

    def first_path(self) -> str:
        """The path an issue names when the source's own names are shown."""
        paths = self.paths()
        return paths[0] if paths else ""

    def referenced(self) -> list[str]:
        """Every path of the row this spec reads (not those inside ``sum``'s items)."""
        extra = [p for p in (self.times, self.per) if p]
        return [*self.paths(), *extra, *self.plus, *self.minus]


FieldValue = FieldSpec  # written as a path or a table


class RowsSpec(_Strict):
    """Nested rows of a record: an order's lines or a cart's items."""

    path: str = Field(description="Path in the record to the list of rows")
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict, description="Canonical row field -> path or field spec"
    )
