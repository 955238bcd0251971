"""A platform's own database for the SQL source's tests and bench: a Turkish shop schema.

Shaped unlike any preset on purpose: Turkish table and column names, order lines and cart
items in tables of their own, order totals only in the lines (quantity x unit price -
line discount), cart values only in the items, consent spelled ONAY/RET/YOK, statuses in
Turkish, and three ways of storing an update time: naive local timestamps (customers, in
Europe/Istanbul), epoch milliseconds (orders) and epoch seconds (carts).

``write_store`` writes canonical records (from ``crmsync.sample`` or a fake platform's
truth) into these tables, so a test can compare what the source reads with what was
written.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from crmsync.records import Cart, ConsentState, Customer, Order, OrderStatus, Record

ZONE = ZoneInfo("Europe/Istanbul")
CONSENT = {
    ConsentState.SUBSCRIBED: "ONAY",
    ConsentState.UNSUBSCRIBED: "RET",
    ConsentState.NONE: "YOK",
}
STATUS = {
    OrderStatus.PENDING: "BEKLIYOR",
    OrderStatus.PAID: "ODENDI",
    OrderStatus.FULFILLED: "TESLIM_EDILDI",
    OrderStatus.CANCELLED: "IPTAL",
    OrderStatus.REFUNDED: "IADE",
}
MONEY = sa.Numeric(12, 2)


def shop_tables(schema: str | None) -> sa.MetaData:
    metadata = sa.MetaData(schema=schema)
    sa.Table(
        "musteriler", metadata,
        sa.Column("musteri_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("eposta", sa.String(320)), sa.Column("cep_telefonu", sa.String(40)),
        sa.Column("adi", sa.String(255)), sa.Column("soyadi", sa.String(255)),
        sa.Column("sehir", sa.String(255)), sa.Column("ilce", sa.String(255)),
        sa.Column("ulke", sa.String(64)), sa.Column("posta_kodu", sa.String(32)),
        sa.Column("adres", sa.String(255)), sa.Column("dil", sa.String(16)),
        sa.Column("dogum_tarihi", sa.Date),
        sa.Column("kayit_zamani", sa.DateTime), sa.Column("guncelleme_zamani", sa.DateTime),
        sa.Column("eposta_izni", sa.String(8)), sa.Column("eposta_izin_zamani", sa.DateTime),
        sa.Column("sms_izni", sa.String(8)), sa.Column("sms_izin_zamani", sa.DateTime),
        sa.Column("silindi", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Index("musteriler_guncelleme", "guncelleme_zamani", "musteri_no"),
    )  # fmt: skip
    sa.Table(
        "siparisler", metadata,
        sa.Column("siparis_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("musteri_no", sa.BigInteger), sa.Column("eposta", sa.String(320)),
        sa.Column("siparis_zamani", sa.DateTime, nullable=False),
        sa.Column("durum", sa.String(16), nullable=False),
        sa.Column("para_birimi", sa.String(3), nullable=False),
        sa.Column("iade_tutari", MONEY, nullable=False, server_default="0"),
        sa.Column("degisim_ms", sa.BigInteger, nullable=False),
        sa.Index("siparisler_degisim", "degisim_ms", "siparis_no"),
    )  # fmt: skip
    sa.Table(
        "siparis_kalemleri", metadata,
        sa.Column("siparis_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sira", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("stok_kodu", sa.String(64)), sa.Column("urun_adi", sa.String(255)),
        sa.Column("kategori", sa.String(255)), sa.Column("adet", sa.Integer, nullable=False),
        sa.Column("birim_fiyat", MONEY, nullable=False),
        sa.Column("indirim", MONEY, nullable=False, server_default="0"),
    )  # fmt: skip
    sa.Table(
        "sepetler", metadata,
        sa.Column("sepet_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("musteri_no", sa.BigInteger), sa.Column("eposta", sa.String(320)),
        sa.Column("para_birimi", sa.String(3), nullable=False),
        sa.Column("olusturma", sa.BigInteger), sa.Column("guncelleme", sa.BigInteger),
        sa.Column("odeme_linki", sa.String(255)),
        sa.Column("tamamlandi", sa.Boolean, nullable=False),
        sa.Index("sepetler_guncelleme", "guncelleme", "sepet_no"),
    )  # fmt: skip
    sa.Table(
        "sepet_kalemleri", metadata,
        sa.Column("sepet_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sira", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("stok_kodu", sa.String(64)), sa.Column("urun_adi", sa.String(255)),
        sa.Column("kategori", sa.String(255)), sa.Column("adet", sa.Integer, nullable=False),
        sa.Column("birim_fiyat", MONEY, nullable=False),
    )  # fmt: skip
    return metadata


def create_shop(engine: sa.Engine, schema: str | None) -> sa.MetaData:
    """Creates the shop's schema (PostgreSQL) and tables; returns their metadata."""
    metadata = shop_tables(schema)
    with engine.begin() as conn:
        if schema is not None:
            conn.execute(sa.text(f'create schema if not exists "{schema}"'))
        metadata.create_all(conn)
    return metadata


def drop_shop(engine: sa.Engine, schema: str | None) -> None:
    with engine.begin() as conn:
        if schema is not None:
            conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
        else:
            shop_tables(None).drop_all(conn)


def local(moment: datetime | None) -> datetime | None:
    """A time as the shop stores it in a naive column: Istanbul wall-clock time."""
    return None if moment is None else moment.astimezone(ZONE).replace(tzinfo=None)


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _ONE_MS


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


_ONE_MS = datetime.resolution * 1000


def customer_row(c: Customer) -> dict[str, Any]:
    email, sms = c.email_consent, c.sms_consent
    return {
        "musteri_no": int(c.external_id), "eposta": c.email, "cep_telefonu": c.phone,
        "adi": c.first_name, "soyadi": c.last_name, "sehir": c.city, "ilce": c.region,
        "ulke": c.country, "posta_kodu": c.postal_code, "adres": c.address1, "dil": c.language,
        "dogum_tarihi": c.birthday, "kayit_zamani": local(c.created_at),
        "guncelleme_zamani": local(c.updated_at),
        "eposta_izni": CONSENT[email.state] if email else None,
        "eposta_izin_zamani": local(email.at) if email else None,
        "sms_izni": CONSENT[sms.state] if sms else None,
        "sms_izin_zamani": local(sms.at) if sms else None,
        "silindi": c.deleted,
    }  # fmt: skip


def order_row(o: Order) -> dict[str, Any]:
    return {
        "siparis_no": int(o.external_id),
        "musteri_no": int(o.customer_external_id) if o.customer_external_id else None,
        "eposta": o.email,
        "siparis_zamani": local(o.placed_at),
        "durum": STATUS[o.status],
        "para_birimi": o.currency,
        "iade_tutari": o.refunded_total,
        "degisim_ms": epoch_ms(o.updated_at or o.placed_at),
    }


def line_rows(o: Order) -> list[dict[str, Any]]:
    return [
        {
            "siparis_no": int(o.external_id),
            "sira": number,
            "stok_kodu": line.sku,
            "urun_adi": line.product,
            "kategori": line.category,
            "adet": line.quantity,
            "birim_fiyat": line.unit_price,
            "indirim": line.discount,
        }
        for number, line in enumerate(o.lines, start=1)
    ]


def cart_row(c: Cart) -> dict[str, Any]:
    return {
        "sepet_no": int(c.external_id),
        "musteri_no": int(c.customer_external_id) if c.customer_external_id else None,
        "eposta": c.email, "para_birimi": c.currency, "olusturma": epoch(c.created_at),
        "guncelleme": epoch(c.updated_at), "odeme_linki": c.checkout_url,
        "tamamlandi": c.converted,
    }  # fmt: skip


def item_rows(c: Cart) -> list[dict[str, Any]]:
    return [
        {
            "sepet_no": int(c.external_id),
            "sira": number,
            "stok_kodu": item.sku,
            "urun_adi": item.product,
            "kategori": item.category,
            "adet": item.quantity,
            "birim_fiyat": item.unit_price,
        }
        for number, item in enumerate(c.items, start=1)
    ]


def write_store(
    engine: sa.Engine, metadata: sa.MetaData, records: Iterable[Record], *, batch: int = 5000
) -> dict[str, int]:
    """Inserts canonical records into the shop's tables in batches; returns rows per table."""
    tables = {name.rpartition(".")[2]: table for name, table in metadata.tables.items()}
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    written = dict.fromkeys(tables, 0)

    def flush(conn: sa.Connection) -> None:
        for name, rows in pending.items():
            if rows:
                conn.execute(tables[name].insert(), rows)
                written[name] += len(rows)
                rows.clear()

    with engine.begin() as conn:
        for record in records:
            if isinstance(record, Customer):
                pending["musteriler"].append(customer_row(record))
            elif isinstance(record, Order):
                pending["siparisler"].append(order_row(record))
                pending["siparis_kalemleri"].extend(line_rows(record))
            else:
                pending["sepetler"].append(cart_row(record))
                pending["sepet_kalemleri"].extend(item_rows(record))
            if len(pending["siparis_kalemleri"]) + len(pending["musteriler"]) >= batch:
                flush(conn)
        flush(conn)
    return written


def shop_config(url: str, schema: str | None, **extra: Any) -> dict[str, Any]:
    """The SQL source's configuration of this shop: tables for customers and orders (with
    their lines), a query for carts (with their items); totals and values from the rows."""
    prefix = f'"{schema}".' if schema else ""
    consent = {"ONAY": "subscribed", "RET": "unsubscribed", "YOK": "none"}
    status = {turkish: status.value for status, turkish in STATUS.items()}
    return {
        "kind": "sql",
        "url": url,
        **({"schema": schema} if schema else {}),
        "timezone": "Europe/Istanbul",
        "streams": {
            "customers": {
                "table": "musteriler",
                "key": "musteri_no",
                "updated_at": "guncelleme_zamani",
                "fields": {
                    "email": "eposta",
                    "phone": "cep_telefonu",
                    "first_name": "adi",
                    "last_name": "soyadi",
                    "city": "sehir",
                    "region": "ilce",
                    "country": "ulke",
                    "postal_code": "posta_kodu",
                    "address1": "adres",
                    "language": "dil",
                    "birthday": "dogum_tarihi",
                    "created_at": "kayit_zamani",
                    "email_consent": {"path": "eposta_izni", "map": consent},
                    "email_consent_at": "eposta_izin_zamani",
                    "sms_consent": {"path": "sms_izni", "map": consent},
                    "sms_consent_at": "sms_izin_zamani",
                    "deleted": "silindi",
                },
            },
            "orders": {
                "table": "siparisler",
                "key": "siparis_no",
                "updated_at": "degisim_ms",
                "updated_at_type": "epoch_ms",
                "fields": {
                    "customer_external_id": "musteri_no",
                    "email": "eposta",
                    "placed_at": "siparis_zamani",
                    "status": {"path": "durum", "map": status},
                    "currency": "para_birimi",
                    "refunded_total": "iade_tutari",
                },
                "lines": {
                    "table": "siparis_kalemleri",
                    "key": "siparis_no",
                    "order_by": ["sira"],
                    "fields": {
                        "sku": "stok_kodu",
                        "product": "urun_adi",
                        "category": "kategori",
                        "quantity": "adet",
                        "unit_price": "birim_fiyat",
                        "discount": "indirim",
                    },
                },
            },
            "carts": {
                "query": f"SELECT * FROM {prefix}sepetler WHERE para_birimi IS NOT NULL",
                "key": "sepet_no",
                "updated_at": "guncelleme",
                "updated_at_type": "epoch",
                "fields": {
                    "customer_external_id": "musteri_no",
                    "email": "eposta",
                    "currency": "para_birimi",
                    "checkout_url": "odeme_linki",
                    "created_at": {"path": "olusturma", "format": "epoch"},
                    "converted": "tamamlandi",
                },
                "items": {
                    "query": f"SELECT * FROM {prefix}sepet_kalemleri",
                    "key": "sepet_no",
                    "order_by": ["sira"],
                    "fields": {
                        "sku": "stok_kodu",
                        "product": "urun_adi",
                        "category": "kategori",
                        "quantity": "adet",
                        "unit_price": "birim_fiyat",
                    },
                },
            },
        },
        **extra,
    }
