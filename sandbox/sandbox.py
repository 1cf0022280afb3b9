#!/usr/bin/env python3
"""Offline stand-ins for the services the connector talks to.

  serve  Business Central API v2.0 + Microsoft Entra client-credentials token
         endpoint + a control API (/_sandbox/...) for tests and demos.
  send   the Shopify side: signed webhook deliveries with retries/duplicates.
  sign   print the base64 HMAC-SHA256 of a file.

Python 3 standard library only.  See sandbox/README.md.
"""

import argparse
import base64
import collections
import datetime as dt
import hashlib
import hmac
import http.client
import http.server
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from decimal import Decimal, InvalidOperation, ROUND_HALF_UP

import shopify  # the Shopify side (sandbox/shopify.py)
import shopify_oauth  # noqa: F401  (registers the OAuth endpoints)
import shopify_admin  # noqa: F401  (GraphQL Admin subset; faults on shop routes)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
# Namespace for the deterministic GUIDs this sandbox derives (second company,
# accounts, currencies).  Fixed so ids are stable across runs.
ID_NS = uuid.UUID("6f1b9d2e-3c57-4a88-9e0d-5b2a7c41f0e3")

USD_COMPANY_ID = "31b7c38b-2d4e-5437-beff-68c052310a74"  # the id the fixtures' @odata.context uses
EUR_COMPANY_ID = "a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6"

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
MAX_BODY = 16 * 1024 * 1024
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CENT = Decimal("0.01")
FIVE_PLACES = Decimal("0.00001")


def did(*parts):
    return str(uuid.uuid5(ID_NS, "/".join(parts)))


def r2(d):
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


def r5(d):
    return d.quantize(FIVE_PLACES, rounding=ROUND_HALF_UP)


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def iso_ms(t=None):
    t = t or utcnow()
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def today():
    return utcnow().date().isoformat()


def new_etag():
    n = str(secrets.randbelow(9 * 10 ** 18) + 10 ** 18)
    raw = ("'%d;%s;00;'" % (len(n), n)).encode()
    return 'W/"' + base64.b64encode(raw).decode() + '"'


def code_upper(s):
    # BC Code fields upper-case per character; keep characters whose upper
    # case would change the length (e.g. German sharp s) as they are.
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)


def plain(o):
    """Control API input -> plain Python numbers (ints and floats).

    Only for the sandbox's own settings (latencies, limits, statuses), never
    for money: answers are written by json_dumps, which keeps Decimals exact.
    """
    if isinstance(o, Decimal):
        if o == o.to_integral_value():
            return int(o)
        return float(o)
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items() if not k.startswith("_")}
    if isinstance(o, list):
        return [plain(v) for v in o]
    return o


def decimal_text(d):
    """A Decimal as an exact JSON number, written the way BC's API examples
    show amounts and quantities: no exponent and no trailing zeros
    (1397.3, 12, 0, 999999999999999.99)."""
    if not d.is_finite():
        raise ValueError("not a finite decimal: %s" % d)
    t = format(d, "f")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t in ("-0", "") else t


_encode_str = json.encoder.encode_basestring


def _json_parts(o, out):
    # str, int, bool and None as the json module writes them; Decimals as
    # exact numbers; keys starting with "_" (internal state) left out
    if isinstance(o, str):
        out.append(_encode_str(o))
    elif isinstance(o, Decimal):
        out.append(decimal_text(o))
    elif isinstance(o, dict):
        out.append("{")
        first = True
        for k, v in o.items():
            if k.startswith("_"):
                continue
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(k))
            out.append(":")
            _json_parts(v, out)
        out.append("}")
    elif isinstance(o, (list, tuple)):
        out.append("[")
        for i, v in enumerate(o):
            if i:
                out.append(",")
            _json_parts(v, out)
        out.append("]")
    else:
        # int, bool, None; floats are only timings and control settings
        out.append(json.dumps(o))


def to_dec(v):
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bool):
        raise ValueError("bool")
    if isinstance(v, (int, float)):
        return Decimal(str(v))
    raise ValueError("not a number")


def json_dumps(o):
    out = []
    _json_parts(o, out)
    return "".join(out).encode("utf-8")


# persisted state keeps Decimals as {"$dec": "..."}
def _state_default(o):
    if isinstance(o, Decimal):
        return {"$dec": str(o)}
    raise TypeError(type(o).__name__)


def _state_hook(d):
    if len(d) == 1 and "$dec" in d:
        return Decimal(d["$dec"])
    return d


class ApiError(Exception):
    """A Business Central style error: {"error":{"code","message"}}."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


def bc_error_body(code, message):
    cid = str(uuid.uuid4())
    return {"error": {"code": code, "message": "%s  CorrelationId:  %s." % (message, cid)}}


class Drop(Exception):
    """Close the connection without answering."""


# ---------------------------------------------------------------------------
# Seed data
# ---------------------------------------------------------------------------

# Chart of accounts seeded in both companies: number, name, category,
# subCategory, accountType, directPosting, blocked.
ACCOUNTS = [
    ("40000", "INCOME", "Income", "", "Heading", False, False),
    ("40100", "Sales, Retail", "Income", "Income, Product Sales", "Posting", True, False),
    ("40250", "Service Income", "Income", "Income, Services", "Posting", True, False),
    ("40400", "Freight and Shipping Income", "Income", "Income, Other", "Posting", True, False),
    ("40900", "Rounding Differences", "Income", "Income, Other", "Posting", True, False),
    ("40950", "Freight Income, old (blocked)", "Income", "Income, Other", "Posting", True, True),
    ("40960", "Sales Discounts (no direct posting)", "Income", "Income, Other", "Posting", False, False),
    ("22150", "Gift Card Liability", "Liabilities", "Current Liabilities", "Posting", True, False),
    ("22300", "Tips Payable to Staff", "Liabilities", "Current Liabilities", "Posting", True, False),
    ("22500", "Sales Taxes Payable", "Liabilities", "Current Liabilities", "Posting", True, False),
]

CURRENCY_NAMES = {
    "USD": ("US dollar", "$"), "EUR": ("Euro", "\u20ac"), "GBP": ("Pound sterling", "\u00a3"),
    "CAD": ("Canadian dollar", "$"), "MXN": ("Mexican peso", "$"), "CHF": ("Swiss franc", "CHF"),
    "DKK": ("Danish krone", "kr."),
}

COMPANY_DEFS = [
    {"id": USD_COMPANY_ID, "name": "CRONUS USA, Inc.", "displayName": "CRONUS USA, Inc.", "lcy": "USD",
     "order_fmt": "{n}", "invoice_fmt": "{n}", "shipment_fmt": "{n}",
     "currencies": ["CAD", "EUR", "GBP", "MXN"]},
    {"id": EUR_COMPANY_ID, "name": "CRONUS DE", "displayName": "CRONUS AG", "lcy": "EUR",
     "order_fmt": "S-ORD{n}", "invoice_fmt": "S-INV{n}", "shipment_fmt": "S-SHPT{n}",
     "currencies": ["CHF", "DKK", "GBP", "USD"]},
]
ORDER_BASE, SHIPMENT_BASE, INVOICE_BASE = 101000, 102000, 103000

# Tax set-up of each company, as BC holds it.  The US company uses US sales
# tax: a tax area lists jurisdictions, each with a rate per tax group; the
# customer's tax area (copied to the order) decides which apply.  The EUR
# company uses VAT: the rate comes from the line's VAT product posting group
# (the line's taxCode).  Each company also knows NONTAXABLE (0 %).  The
# control API (POST /_sandbox/tax) replaces a company's areas or rates.
US_TAX_AREAS = {
    "ATLANTA, GA": [("GA", "GA State Tax", {"FURNITURE": "4", "FREIGHT": "4", "SERVICES": "4"})],
    "MARIETTA, GA": [("GA", "GA State Tax", {"FURNITURE": "4", "FREIGHT": "4", "SERVICES": "4"}),
                     ("GACOBB", "Cobb County Tax", {"FURNITURE": "2", "FREIGHT": "2", "SERVICES": "2"})],
}
US_TAX_GROUPS = ["FURNITURE", "FREIGHT", "SERVICES", "NONTAXABLE"]
EU_VAT_RATES = {"STANDARD": "19", "REDUCED": "7", "NONTAXABLE": "0"}
# tax group (US) / VAT product posting group (EUR) of each seeded G/L account
ACCOUNT_TAX_GROUPS = {
    "40100": ("FURNITURE", "STANDARD"), "40250": ("SERVICES", "STANDARD"),
    "40400": ("FREIGHT", "STANDARD"), "40900": ("NONTAXABLE", "NONTAXABLE"),
    "22150": ("NONTAXABLE", "NONTAXABLE"), "22300": ("NONTAXABLE", "NONTAXABLE"),
    "22500": ("NONTAXABLE", "NONTAXABLE"),
}
# customers whose seeded tax area differs from the fixture's "ATLANTA, GA"
CUSTOMER_TAX_AREAS = {"20000": "MARIETTA, GA"}
# what a customer created through the API gets (BC's customer template)
NEW_CUSTOMER_TAX_AREA = "ATLANTA, GA"

# per company id: {"type": "Sales Tax"|"VAT", "areas": {...}, "groups": {...}}
# TODO: changes made through the control API are not kept in --state-file
TAX = {}


def default_tax(lcy):
    if lcy == "USD":
        areas = {code: [(j, name, {g: Decimal(r) for g, r in rates.items()}) for j, name, rates in juris]
                 for code, juris in US_TAX_AREAS.items()}
        return {"type": "Sales Tax", "areas": areas, "groups": {g: None for g in US_TAX_GROUPS}}
    return {"type": "VAT", "areas": {}, "groups": {g: Decimal(r) for g, r in EU_VAT_RATES.items()}}


def tax_view(t):
    return {"type": t["type"],
            "areas": {code: [{"jurisdiction": j, "name": n, "rates": dict(r)} for j, n, r in juris]
                      for code, juris in t["areas"].items()},
            "groups": {g: r for g, r in t["groups"].items()}}


def load_seed(fixtures_dir):
    with open(os.path.join(fixtures_dir, "bc", "cronus-items.json"), encoding="utf-8") as f:
        items = json.load(f, parse_float=Decimal)["value"]
    with open(os.path.join(fixtures_dir, "bc", "cronus-customers.json"), encoding="utf-8") as f:
        customers = json.load(f, parse_float=Decimal)["value"]
    return items, customers


class Company:
    def __init__(self, cdef, items, customers, created):
        self.id = cdef["id"]
        self.name = cdef["name"]
        self.display_name = cdef["displayName"]
        self.lcy = cdef["lcy"]
        self.fmt = {"order": cdef["order_fmt"], "invoice": cdef["invoice_fmt"], "shipment": cdef["shipment_fmt"]}
        self.created = created
        self.etag = new_etag()
        primary = self.id == USD_COMPANY_ID
        self.items = collections.OrderedDict()
        for it in items:
            it = dict(it)
            if not primary:
                # same item numbers and prices, ids of this company
                for k in list(it):
                    if k.endswith("Id") and isinstance(it[k], str) and GUID_RE.match(it[k]) and it[k] != ZERO_GUID:
                        it[k] = did(self.id, k, it[k])
                it["id"] = did(self.id, "item", it["number"])
                it["@odata.etag"] = new_etag()
            self.items[it["number"]] = it
        self.customers = collections.OrderedDict()
        for cu in customers:
            cu = dict(cu)
            if not primary:
                for k in list(cu):
                    if k.endswith("Id") and isinstance(cu[k], str) and GUID_RE.match(cu[k]) and cu[k] != ZERO_GUID:
                        cu[k] = did(self.id, k, cu[k])
                cu["id"] = did(self.id, "customer", cu["number"])
                cu["@odata.etag"] = new_etag()
                cu["currencyCode"] = self.lcy  # blank currency = local currency of this company
            self.customers[cu["number"]] = cu
        self.tax = default_tax(self.lcy)
        TAX[self.id] = self.tax
        self.tax_areas = collections.OrderedDict()
        for code in self.tax["areas"]:
            self.tax_areas[code] = {"@odata.etag": new_etag(), "id": did(self.id, "taxArea", code), "code": code,
                                    "displayName": code, "taxType": self.tax["type"],
                                    "lastModifiedDateTime": created}
        for it in self.items.values():
            if self.tax["type"] == "VAT":
                it["taxGroupCode"] = "STANDARD"
                it["taxGroupId"] = did(self.id, "taxGroup", "STANDARD")
        for cu in self.customers.values():
            if self.tax["type"] == "VAT":
                cu["taxAreaId"], cu["taxAreaDisplayName"] = ZERO_GUID, ""
            else:
                area = CUSTOMER_TAX_AREAS.get(cu["number"], cu.get("taxAreaDisplayName", ""))
                if area in self.tax_areas:
                    cu["taxAreaId"], cu["taxAreaDisplayName"] = self.tax_areas[area]["id"], area
        self.customer_seq = 0
        self.payment_terms = {c.get("paymentTermsId") for c in self.customers.values()}
        self.shipment_methods = {c.get("shipmentMethodId") for c in self.customers.values()}
        self.accounts = collections.OrderedDict()
        for (no, name, cat, sub, atype, direct, blocked) in ACCOUNTS:
            self.accounts[no] = {
                "@odata.etag": new_etag(), "id": did(self.id, "account", no), "number": no,
                "displayName": name, "category": cat, "subCategory": sub, "blocked": blocked,
                "accountType": atype, "directPosting": direct, "netChange": Decimal(0),
                "consolidationTranslationMethod": "Average Rate (Manual)",
                "consolidationDebitAccount": "", "consolidationCreditAccount": "",
                "excludeFromConsolidation": False, "lastModifiedDateTime": created,
                "_taxGroup": ACCOUNT_TAX_GROUPS.get(no, ("", ""))[0 if self.lcy == "USD" else 1],
            }
        self.currencies = collections.OrderedDict()
        for code in cdef["currencies"]:
            name, sym = CURRENCY_NAMES.get(code, (code, code))
            self.currencies[code] = {
                "@odata.etag": new_etag(), "id": did(self.id, "currency", code), "code": code,
                "displayName": name, "symbol": sym, "amountDecimalPlaces": "2:2",
                "amountRoundingPrecision": Decimal("0.01"), "lastModifiedDateTime": created,
            }
        self.orders = collections.OrderedDict()     # id -> order (with "_lines")
        self.invoices = collections.OrderedDict()
        self.shipments = collections.OrderedDict()
        self.posted = collections.OrderedDict()     # order id -> {"order", "invoiceId", "shipmentId"}
        self.counters = {"order": 0, "invoice": 0, "shipment": 0}

    def next_number(self, kind):
        number = self.peek_number(kind)
        self.counters[kind] += 1
        return number

    def peek_number(self, kind):
        """The number the next document of this kind gets (BC rolls the number series back with a document it
        refuses, so errors about a document not created name the number it would have had)."""
        base = {"order": ORDER_BASE, "invoice": INVOICE_BASE, "shipment": SHIPMENT_BASE}[kind]
        return self.fmt[kind].format(n=base + self.counters[kind] + 1)

    def view(self):
        return {
            "@odata.etag": self.etag, "id": self.id, "systemVersion": "25.0.0.0", "timestamp": 0,
            "name": self.name, "displayName": self.display_name, "businessProfileId": "",
            "systemCreatedAt": self.created, "systemCreatedBy": ZERO_GUID,
            "systemModifiedAt": self.created, "systemModifiedBy": ZERO_GUID,
        }

    def customer_by_id(self, cid):
        for c in self.customers.values():
            if c["id"] == cid:
                return c
        return None

    def currency_id(self, code):
        if code == "" or code == self.lcy:
            return ZERO_GUID
        return self.currencies[code]["id"]

    def area_of(self, customer):
        """The tax area code an order of this customer gets ("" = none)."""
        if self.tax["type"] != "Sales Tax" or not customer.get("taxLiable", False):
            return ""
        return customer.get("taxAreaDisplayName", "") if customer.get("taxAreaDisplayName") in self.tax_areas \
            else ""

    def dump(self):
        created = [c for c in self.customers.values() if c.get("_created")]
        return {"orders": list(self.orders.values()), "invoices": list(self.invoices.values()),
                "shipments": list(self.shipments.values()), "posted": dict(self.posted),
                "counters": self.counters, "customers": created, "customer_seq": self.customer_seq}

    def restore(self, d):
        self.orders = collections.OrderedDict((o["id"], o) for o in d.get("orders", []))
        self.invoices = collections.OrderedDict((o["id"], o) for o in d.get("invoices", []))
        self.shipments = collections.OrderedDict((o["id"], o) for o in d.get("shipments", []))
        self.posted = collections.OrderedDict(d.get("posted", {}))
        self.counters.update(d.get("counters", {}))
        for cu in d.get("customers", []):
            self.customers[cu["number"]] = cu
        self.customer_seq = d.get("customer_seq", 0)


# ---------------------------------------------------------------------------
# Field definitions (API v2.0 names; lengths of the underlying BC fields)
# ---------------------------------------------------------------------------

# writable salesOrder properties, in the order BC's API page validates them
ORDER_FIELDS = [
    ("externalDocumentNumber", "code", 35), ("orderDate", "date", None), ("postingDate", "date", None),
    ("customerId", "guid", None), ("customerNumber", "code", 20),
    ("billToCustomerId", "guid", None), ("billToCustomerNumber", "code", 20),
    ("shipToName", "text", 100), ("shipToContact", "text", 100),
    ("sellToAddressLine1", "text", 100), ("sellToAddressLine2", "text", 50), ("sellToCity", "text", 30),
    ("sellToCountry", "code", 10), ("sellToState", "text", 30), ("sellToPostCode", "code", 20),
    ("shipToAddressLine1", "text", 100), ("shipToAddressLine2", "text", 50), ("shipToCity", "text", 30),
    ("shipToCountry", "code", 10), ("shipToState", "text", 30), ("shipToPostCode", "code", 20),
    ("shortcutDimension1Code", "code", 20), ("shortcutDimension2Code", "code", 20),
    ("currencyId", "guid", None), ("currencyCode", "code", 10), ("pricesIncludeTax", "bool", None),
    ("paymentTermsId", "guid", None), ("shipmentMethodId", "guid", None), ("salesperson", "code", 20),
    ("partialShipping", "bool", None), ("requestedDeliveryDate", "date", None),
    ("discountAmount", "decimal", None), ("phoneNumber", "text", 30), ("email", "text", 80),
]
ORDER_READONLY = {
    "id", "number", "customerName", "billToName", "billToAddressLine1", "billToAddressLine2", "billToCity",
    "billToCountry", "billToState", "billToPostCode", "discountAppliedBeforeTax", "totalAmountExcludingTax",
    "totalTaxAmount", "totalAmountIncludingTax", "fullyShipped", "status", "lastModifiedDateTime",
}
ORDER_PATCHABLE = {
    "externalDocumentNumber", "orderDate", "postingDate", "shipToName", "shipToContact",
    "sellToAddressLine1", "sellToAddressLine2", "sellToCity", "sellToCountry", "sellToState", "sellToPostCode",
    "shipToAddressLine1", "shipToAddressLine2", "shipToCity", "shipToCountry", "shipToState", "shipToPostCode",
    "shortcutDimension1Code", "shortcutDimension2Code", "salesperson", "partialShipping",
    "requestedDeliveryDate", "phoneNumber", "email", "discountAmount", "pricesIncludeTax",
}
LINE_FIELDS = [
    ("documentId", "guid", None), ("sequence", "int", None), ("itemId", "guid", None), ("accountId", "guid", None),
    ("lineType", "enum", None), ("lineObjectNumber", "code", 20), ("description", "text", 100),
    ("unitOfMeasureId", "guid", None), ("unitOfMeasureCode", "code", 10), ("quantity", "decimal", None),
    ("unitPrice", "decimal", None), ("discountAmount", "decimal", None), ("discountPercent", "decimal", None),
    ("taxCode", "code", 20), ("shipmentDate", "date", None), ("invoiceQuantity", "decimal", None),
    ("shipQuantity", "decimal", None), ("itemVariantId", "guid", None), ("locationId", "guid", None),
]
LINE_READONLY = {
    "id", "discountAppliedBeforeTax", "amountExcludingTax", "taxPercent", "totalTaxAmount",
    "amountIncludingTax", "invoiceDiscountAllocation", "netAmount", "netTaxAmount",
    "netAmountIncludingTax", "shippedQuantity", "invoicedQuantity",
}
LINE_TYPES = {"Comment", "Account", "Item", "Resource", "Value", "Charge", "Fixed_x0020_Asset", "Fixed Asset"}
EDM = {"code": "String", "text": "String", "guid": "Guid", "date": "Date", "decimal": "Decimal",
       "int": "Int32", "bool": "Boolean", "enum": "String"}


def coerce(name, kind, maxlen, value):
    """Check one incoming property the way BC/OData would; return the stored value."""
    if kind in ("code", "text"):
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ApiError(400, "BadRequest", "Cannot convert a primitive value to the expected type 'Edm.String'. "
                           "See the inner exception for more details.")
        if kind == "code":
            value = code_upper(value.strip())
        if maxlen and len(value) > maxlen:
            raise ApiError(400, "Application_StringExceededLength",
                           "The length of the string is %d, but it must be less than or equal to %d characters. "
                           "Value: %s" % (len(value), maxlen, value))
        return value
    if kind == "enum":
        if not isinstance(value, str):
            raise ApiError(400, "BadRequest", "Cannot convert a primitive value to the expected type 'Edm.String'.")
        return value
    if kind == "guid":
        if isinstance(value, str) and GUID_RE.match(value):
            return value.lower()
        raise ApiError(400, "BadRequest", "Cannot convert the literal '%s' to the expected type 'Edm.Guid'." % (value,))
    if kind == "date":
        if isinstance(value, str) and DATE_RE.match(value):
            try:
                dt.date.fromisoformat(value)
                return value
            except ValueError:
                pass
        raise ApiError(400, "BadRequest", "Cannot convert the literal '%s' to the expected type 'Edm.Date'." % (value,))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ApiError(400, "BadRequest", "Cannot convert a primitive value to the expected type 'Edm.Boolean'.")
    if kind in ("decimal", "int"):
        try:
            d = to_dec(value)
            if not d.is_finite():
                raise ValueError("not finite")
        except (ValueError, InvalidOperation):
            raise ApiError(400, "BadRequest", "Cannot convert a primitive value to the expected type 'Edm.%s'. "
                           "See the inner exception for more details." % EDM[kind])
        if kind == "int":
            if d != d.to_integral_value() or not -2 ** 31 <= d < 2 ** 31:
                raise ApiError(400, "BadRequest", "Cannot convert a primitive value to the expected type 'Edm.Int32'.")
            return int(d)
        return d
    raise AssertionError(kind)


def check_properties(body, fields, readonly, type_name, allow=()):
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "Invalid Request Body")
    known = {f[0] for f in fields} | set(allow)
    for k in body:
        if k.startswith("@"):
            continue
        if k in known:
            continue
        if k in readonly:
            raise ApiError(400, "BadRequest_InvalidOperation", "Control '%s' is read-only." % k)
        raise ApiError(400, "BadRequest", "The property '%s' does not exist on type 'Microsoft.NAV.%s'. Make sure to "
                       "only use property names that are defined by the type." % (k, type_name))


# ---------------------------------------------------------------------------
# Sales documents
# ---------------------------------------------------------------------------

def d0():
    return Decimal(0)


def compute_line(line):
    """The line amount: quantity x unit price - line discount (including
    tax when the order's prices include it)."""
    gross = r2(line["quantity"] * line["unitPrice"])
    if line["_discountGiven"] == "amount":
        disc = r2(line["discountAmount"])
    elif line["_discountGiven"] == "percent":
        disc = r2(gross * line["discountPercent"] / 100)
    else:
        disc = d0()
    if gross != 0 and abs(disc) > abs(gross):
        raise ApiError(400, "Application_DialogException",
                       "The line discount amount %s cannot be greater than the line amount %s." % (disc, gross))
    line["discountAmount"] = disc
    line["discountPercent"] = r5(disc * 100 / gross) if gross != 0 and line["_discountGiven"] == "amount" \
        else (line["discountPercent"] if line["_discountGiven"] == "percent" else d0())
    line["_amount"] = gross - disc


def tax_parts(tax, area, group):
    """(key, rate %) pairs that apply to a line of this tax group: one per
    jurisdiction of the order's tax area (sales tax), or the VAT rate of
    the VAT product posting group."""
    if tax is None or not group:
        return []
    if tax["type"] == "VAT":
        rate = tax["groups"].get(group)
        return [("VAT:" + group, rate)] if rate else []
    parts = []
    for jur, _name, rates in tax["areas"].get(area, []):
        rate = rates.get(group)
        if rate:
            parts.append((jur, rate))
    return parts


def recompute_order(order):
    """Amounts, invoice discount and tax of an order, as BC calculates them.

    Tax is calculated on the amounts after the invoice discount and rounded
    once per document and key: per jurisdiction for US sales tax (the sum
    of the taxable amounts of the jurisdiction times its rate, rounded
    once), per VAT rate for VAT.  With prices including tax the tax is the
    gross minus the gross divided by (1 + rate), rounded once.  Each key's
    tax is then spread over its lines by running remainder, so the line
    taxes add up to the document's exactly."""
    lines = order["_lines"]
    prices_incl = order["pricesIncludeTax"]
    for ln in lines:
        compute_line(ln)
    base = sum((ln["_amount"] for ln in lines), d0())
    disc = r2(order["discountAmount"])
    if disc and base and abs(disc) > abs(base):
        raise ApiError(400, "Application_DialogException",
                       "The invoice discount amount %s cannot be greater than the document amount %s." % (disc, base))
    # spread the invoice discount over the lines by amount, largest remainder
    alloc = [d0()] * len(lines)
    if disc and base:
        raw = [ln["_amount"] * disc / base for ln in lines]
        alloc = [r.quantize(CENT, rounding="ROUND_DOWN") for r in raw]
        rest = int((disc - sum(alloc, d0())) / CENT)
        order_idx = sorted(range(len(lines)), key=lambda i: raw[i] - alloc[i], reverse=True)
        for i in order_idx[:max(rest, 0)]:
            alloc[i] += CENT
    net = [ln["_amount"] - a for ln, a in zip(lines, alloc)]
    tax = TAX.get(order.get("_companyId"))
    area = order.get("_taxArea", "")
    keys = collections.OrderedDict()
    rates = [d0()] * len(lines)
    for i, ln in enumerate(lines):
        for key, rate in tax_parts(tax, area, ln.get("taxCode", "")):
            keys.setdefault(key, (rate, []))[1].append(i)
            rates[i] += rate
    line_tax = [d0()] * len(lines)
    for key, (rate, idx) in keys.items():
        total = sum((net[i] for i in idx), d0())
        if prices_incl:
            t = total - r2(total * 100 / (100 + rate))
        else:
            t = r2(total * rate / 100)
        acc_base, acc_tax = d0(), d0()
        for i in idx:
            acc_base += net[i]
            share = r2(t * acc_base / total) if total else d0()
            line_tax[i] += share - acc_tax
            acc_tax = share
    for ln, a, n, t, rate in zip(lines, alloc, net, line_tax, rates):
        ln["invoiceDiscountAllocation"] = a
        ln["totalTaxAmount"] = t
        ln["netTaxAmount"] = t
        ln["taxPercent"] = rate
        if prices_incl:
            ln["amountIncludingTax"] = ln["_amount"]
            ln["amountExcludingTax"] = ln["_amount"] - t
            ln["netAmountIncludingTax"] = n
            ln["netAmount"] = n - t
        else:
            ln["amountExcludingTax"] = ln["_amount"]
            ln["amountIncludingTax"] = ln["_amount"] + t
            ln["netAmount"] = n
            ln["netAmountIncludingTax"] = n + t
    order["discountAmount"] = disc
    order["totalAmountExcludingTax"] = sum((ln["netAmount"] for ln in lines), d0())
    order["totalTaxAmount"] = sum((ln["netTaxAmount"] for ln in lines), d0())
    order["totalAmountIncludingTax"] = sum((ln["netAmountIncludingTax"] for ln in lines), d0())


def build_line(company, order, raw, default_seq, used_seqs):
    check_properties(raw, LINE_FIELDS, LINE_READONLY, "salesOrderLine")
    v = {}
    for name, kind, maxlen in LINE_FIELDS:
        if name in raw:
            v[name] = coerce(name, kind, maxlen, raw[name])
    if "documentId" in v and v["documentId"] != order["id"]:
        raise ApiError(400, "Application_DialogException", 'The value for "documentId" cannot be modified.')
    seq = v.get("sequence", default_seq)
    if seq in used_seqs:
        raise ApiError(409, "Internal_EntityWithSameKeyExists",
                       "The Sales Line already exists. Identification fields and values: Document Type='Order',"
                       "Document No.='%s',Line No.='%d'" % (order["number"], seq))
    item = account = None
    if "itemId" in v:
        item = next((i for i in company.items.values() if i["id"] == v["itemId"]), None)
        if item is None:
            raise ApiError(400, "Application_DialogException", "Item does not exist.")
    if "accountId" in v and v["accountId"] != ZERO_GUID:
        if item is not None:
            raise ApiError(400, "Application_DialogException",
                           'Both "itemId" and "accountId" are specified. Specify only one of them.')
        account = next((a for a in company.accounts.values() if a["id"] == v["accountId"]), None)
        if account is None:
            raise ApiError(400, "Application_DialogException", "Account does not exist.")
    ltype = v.get("lineType")
    if ltype is None:
        ltype = "Item" if item else ("Account" if account else "Comment")
    if ltype not in LINE_TYPES:
        raise ApiError(400, "BadRequest", "The value '%s' is not valid for the enumeration type "
                       "'Microsoft.NAV.invoiceLineAggLineType'." % ltype)
    if ltype == "Fixed Asset":
        ltype = "Fixed_x0020_Asset"
    if item is not None and ltype != "Item" or account is not None and ltype != "Account":
        raise ApiError(400, "Application_DialogException",
                       'The "lineType" does not match the "itemId" or "accountId" that was given.')
    number = v.get("lineObjectNumber")
    if ltype == "Item":
        item = line_object(company.items, item, number, "Item")
        number = item["number"]
    elif ltype == "Account":
        account = line_object(company.accounts, account, number, "Account")
        number = account["number"]
        if account["accountType"] != "Posting":
            raise ApiError(400, "Application_FieldValidationException",
                           "Account Type must be equal to 'Posting'  in G/L Account: No.=%s. Current value is '%s'."
                           % (number, account["accountType"]))
        if account["blocked"]:
            raise ApiError(400, "Application_FieldValidationException",
                           "Blocked must be equal to 'No'  in G/L Account: No.=%s. Current value is 'Yes'." % number)
        if not account["directPosting"]:
            raise ApiError(400, "Application_FieldValidationException",
                           "Direct Posting must have a value in G/L Account: No.=%s. It cannot be zero or empty."
                           % number)
    elif ltype == "Comment":
        number = ""
    else:
        # no resources, item charges, fixed assets or values are seeded
        table = {"Resource": "Resource", "Charge": "Item Charge", "Fixed_x0020_Asset": "Fixed Asset",
                 "Value": "Item"}[ltype]
        raise ApiError(400, "Internal_InvalidTableRelation",
                       "The field No. of table Sales Line contains a value (%s) that cannot be found in the related "
                       "table (%s)." % (number or "", table))
    uom = v.get("unitOfMeasureCode")
    if item is not None:
        base_uom = item.get("baseUnitOfMeasureCode", "")
        if uom not in (None, "", base_uom):
            raise ApiError(400, "Internal_InvalidTableRelation",
                           "The field Unit of Measure Code of table Sales Line contains a value (%s) that cannot be "
                           "found in the related table (Item Unit of Measure)." % uom)
        uom = base_uom
        uom_id = item.get("baseUnitOfMeasureId", ZERO_GUID)
    else:
        uom = uom or ""
        uom_id = ZERO_GUID
    is_comment = ltype == "Comment"
    qty = r5(v.get("quantity", d0())) if not is_comment else d0()
    if "unitPrice" in v:
        price = r5(v["unitPrice"])
    elif item is not None:
        price = to_dec(item.get("unitPrice", 0))
    else:
        price = d0()
    if is_comment:
        price = d0()
    if "discountPercent" in v and not (0 <= v["discountPercent"] <= 100):
        raise ApiError(400, "Application_DialogException",
                       "The value %s of discountPercent is not within the range 0 to 100." % v["discountPercent"])
    given = "amount" if "discountAmount" in v else ("percent" if "discountPercent" in v else None)
    if is_comment:
        given = None
    if item is not None:
        desc_default = item.get("displayName", "")
    elif account is not None:
        desc_default = account["displayName"]
    else:
        desc_default = ""
    line = {
        "@odata.etag": new_etag(),
        "id": str(uuid.uuid4()),
        "documentId": order["id"],
        "sequence": seq,
        "itemId": item["id"] if item is not None else ZERO_GUID,
        "accountId": account["id"] if account is not None else ZERO_GUID,
        "lineType": ltype,
        "lineObjectNumber": number,
        "description": v.get("description", desc_default),
        "unitOfMeasureId": uom_id,
        "unitOfMeasureCode": uom,
        "quantity": qty,
        "unitPrice": price,
        "discountAmount": v.get("discountAmount", d0()),
        "discountPercent": v.get("discountPercent", d0()),
        "discountAppliedBeforeTax": False,
        "amountExcludingTax": d0(),
        "taxCode": line_tax_code(company, v, item, account, is_comment),
        "taxPercent": d0(),
        "totalTaxAmount": d0(),
        "amountIncludingTax": d0(),
        "invoiceDiscountAllocation": d0(),
        "netAmount": d0(),
        "netTaxAmount": d0(),
        "netAmountIncludingTax": d0(),
        "shipmentDate": v.get("shipmentDate", order["orderDate"]),
        "shippedQuantity": d0(),
        "invoicedQuantity": d0(),
        "invoiceQuantity": r5(v["invoiceQuantity"]) if "invoiceQuantity" in v else qty,
        "shipQuantity": r5(v["shipQuantity"]) if "shipQuantity" in v else qty,
        "itemVariantId": v.get("itemVariantId", ZERO_GUID),
        "locationId": v.get("locationId", ZERO_GUID),
        "_discountGiven": given,
    }
    return line


def line_tax_code(company, v, item, account, is_comment):
    """The tax group (US) or VAT product posting group of a line: as given,
    else the item's or G/L account's; it must exist in the company."""
    if is_comment:
        return ""
    if "taxCode" in v:
        code = v["taxCode"]
    elif item is not None:
        code = item.get("taxGroupCode", "")
    elif account is not None:
        code = account.get("_taxGroup", "")
    else:
        code = ""
    if code and code not in company.tax["groups"]:
        field, table = ("Tax Group Code", "Tax Group") if company.tax["type"] == "Sales Tax" \
            else ("VAT Prod. Posting Group", "VAT Product Posting Group")
        raise ApiError(400, "Internal_InvalidTableRelation",
                       "The field %s of table Sales Line contains a value (%s) that cannot be found in the related "
                       "table (%s)." % (field, code, table))
    return code


def line_object(table, given, number, kind):
    """The item or G/L account a line names: by lineObjectNumber, which
    must agree with an itemId/accountId given too, else by that id."""
    if number is not None:
        if given is not None and number != given["number"]:
            raise ApiError(400, "Application_DialogException",
                           'The value for "lineObjectNumber" cannot be modified.')
        given = table.get(number)
    if given is None:
        raise ApiError(400, "Application_DialogException", "%s does not exist." % kind)
    return given

def resolve_customer(company, v, id_key, number_key, role):
    """The customer an order names by id and/or number, as BC resolves
    it (role: "sell-to" or "bill-to"); None when it names none."""
    customer = None
    if id_key in v:
        customer = company.customer_by_id(v[id_key])
        if customer is None:
            raise ApiError(400, "Application_DialogException",
                           "The %s customer cannot be found." % role)
    if number_key in v:
        if customer is not None:
            if customer["number"] != v[number_key]:
                raise ApiError(400, "Application_DialogException",
                               "The %s customer values do not match to a specific Customer." % role)
        else:
            customer = company.customers.get(v[number_key])
            if customer is None:
                raise ApiError(400, "Application_DialogException",
                               "The %s customer cannot be found." % role)
    return customer

def build_order(company, body):
    """Validate a POST salesOrders body (deep insert included) and return a new order; raise on any error."""
    check_properties(body, ORDER_FIELDS, ORDER_READONLY, "salesOrder", allow=("salesOrderLines", "number"))
    if "number" in body:
        raise ApiError(400, "Application_DialogException",
                       "You may not enter numbers manually. If you want to enter numbers manually, please activate "
                       "Manual Nos. in No. Series S-ORD.")
    v = {}
    for name, kind, maxlen in ORDER_FIELDS:
        if name in body:
            v[name] = coerce(name, kind, maxlen, body[name])
    customer = resolve_customer(company, v, "customerId", "customerNumber", "sell-to")
    bill_to = resolve_customer(company, v, "billToCustomerId", "billToCustomerNumber", "bill-to")
    currency = None
    if "currencyId" in v:
        if v["currencyId"] == ZERO_GUID:
            currency = ""
        else:
            cur = next((c for c in company.currencies.values() if c["id"] == v["currencyId"]), None)
            if cur is None:
                raise ApiError(400, "Application_DialogException", 'The "currencyId" does not match to a Currency.')
            currency = cur["code"]
    if "currencyCode" in v:
        code = "" if v["currencyCode"] in ("", company.lcy) else v["currencyCode"]
        if currency is not None and currency != code:
            raise ApiError(400, "Application_DialogException",
                           "The currency values do not match to a specific Currency.")
        if code and code not in company.currencies:
            raise ApiError(400, "Application_DialogException", 'The "currencyCode" does not match to a Currency.')
        currency = code
    for fld, known, label in (("paymentTermsId", company.payment_terms, "Payment Terms"),
                              ("shipmentMethodId", company.shipment_methods, "Shipment Method")):
        if fld in v and v[fld] != ZERO_GUID and v[fld] not in known:
            raise ApiError(400, "Application_DialogException",
                           'The "%s" does not match to a %s.' % (fld, label))
    if customer is None:
        raise ApiError(400, "Application_DialogException", 'A "customerNumber" or a "customerId" must be provided.')
    bill_to = bill_to or customer
    if currency is None:
        cc = customer.get("currencyCode", "")
        currency = "" if cc in ("", company.lcy) else cc
    now = iso_ms()
    order_date = v.get("orderDate", today())
    order = {
        "@odata.etag": None,
        "id": str(uuid.uuid4()),
        "number": None,
        "externalDocumentNumber": v.get("externalDocumentNumber", ""),
        "orderDate": order_date,
        "postingDate": v.get("postingDate", today()),
        "customerId": customer["id"],
        "customerNumber": customer["number"],
        "customerName": customer["displayName"],
        "billToName": bill_to["displayName"],
        "billToCustomerId": bill_to["id"],
        "billToCustomerNumber": bill_to["number"],
        "shipToName": v.get("shipToName", customer["displayName"]),
        "shipToContact": v.get("shipToContact", ""),
        "sellToAddressLine1": v.get("sellToAddressLine1", customer.get("addressLine1", "")),
        "sellToAddressLine2": v.get("sellToAddressLine2", customer.get("addressLine2", "")),
        "sellToCity": v.get("sellToCity", customer.get("city", "")),
        "sellToCountry": v.get("sellToCountry", customer.get("country", "")),
        "sellToState": v.get("sellToState", customer.get("state", "")),
        "sellToPostCode": v.get("sellToPostCode", customer.get("postalCode", "")),
        "billToAddressLine1": bill_to.get("addressLine1", ""),
        "billToAddressLine2": bill_to.get("addressLine2", ""),
        "billToCity": bill_to.get("city", ""),
        "billToCountry": bill_to.get("country", ""),
        "billToState": bill_to.get("state", ""),
        "billToPostCode": bill_to.get("postalCode", ""),
        "shipToAddressLine1": v.get("shipToAddressLine1", customer.get("addressLine1", "")),
        "shipToAddressLine2": v.get("shipToAddressLine2", customer.get("addressLine2", "")),
        "shipToCity": v.get("shipToCity", customer.get("city", "")),
        "shipToCountry": v.get("shipToCountry", customer.get("country", "")),
        "shipToState": v.get("shipToState", customer.get("state", "")),
        "shipToPostCode": v.get("shipToPostCode", customer.get("postalCode", "")),
        "shortcutDimension1Code": v.get("shortcutDimension1Code", ""),
        "shortcutDimension2Code": v.get("shortcutDimension2Code", ""),
        "currencyId": company.currency_id(currency),
        "currencyCode": currency or company.lcy,
        "pricesIncludeTax": v.get("pricesIncludeTax", False),
        "paymentTermsId": v.get("paymentTermsId", customer.get("paymentTermsId", ZERO_GUID)),
        "shipmentMethodId": v.get("shipmentMethodId", customer.get("shipmentMethodId", ZERO_GUID)),
        "salesperson": v.get("salesperson", customer.get("salespersonCode", "")),
        "partialShipping": v.get("partialShipping", True),
        "requestedDeliveryDate": v.get("requestedDeliveryDate", "0001-01-01"),
        "discountAmount": v.get("discountAmount", d0()),
        "discountAppliedBeforeTax": True,
        "totalAmountExcludingTax": d0(),
        "totalTaxAmount": d0(),
        "totalAmountIncludingTax": d0(),
        "fullyShipped": False,
        "status": "Draft",
        "lastModifiedDateTime": now,
        "phoneNumber": v.get("phoneNumber", customer.get("phoneNumber", "")),
        "email": v.get("email", customer.get("email", "")),
        "_lines": [],
        "_companyId": company.id,
        "_taxArea": company.area_of(customer),
    }
    check_prices_incl(company, order)
    lines_raw = body.get("salesOrderLines", [])
    if lines_raw is None:
        lines_raw = []
    if not isinstance(lines_raw, list):
        raise ApiError(400, "BadRequest", "Invalid Request Body")
    order["number"] = company.peek_number("order")
    used = set()
    for i, raw in enumerate(lines_raw):
        ln = build_line(company, order, raw, 10000 * (i + 1), used)
        used.add(ln["sequence"])
        order["_lines"].append(ln)
    order["_lines"].sort(key=lambda l: l["sequence"])
    recompute_order(order)
    return order


CUSTOMER_FIELDS = [
    ("displayName", "text", 100), ("type", "enum", None), ("addressLine1", "text", 100),
    ("addressLine2", "text", 50), ("city", "text", 30), ("state", "text", 30), ("country", "code", 10),
    ("postalCode", "code", 20), ("phoneNumber", "text", 30), ("email", "text", 80), ("website", "text", 80),
    ("taxLiable", "bool", None), ("taxAreaId", "guid", None), ("taxRegistrationNumber", "text", 20),
    ("currencyId", "guid", None), ("currencyCode", "code", 10), ("paymentTermsId", "guid", None),
    ("shipmentMethodId", "guid", None), ("paymentMethodId", "guid", None), ("blocked", "enum", None),
    ("number", "code", 20), ("salespersonCode", "code", 20),
]
CUSTOMER_READONLY = {"id", "taxAreaDisplayName", "balanceDue", "lastModifiedDateTime"}
EMAIL_RE = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[^@\s;,]+$")
PHONE_BAD_RE = re.compile(r"[A-Za-z]")


def build_customer(company, body):
    """POST customers: validated like BC's customer API page, numbered from
    the customer number series (C00010, C00020, ...), with what BC's
    customer template gives a new customer: the company's currency, the
    payment terms of the seeded customers, taxable in the default tax area
    (US sales tax)."""
    check_properties(body, CUSTOMER_FIELDS, CUSTOMER_READONLY, "customer")
    v = {}
    for name, kind, maxlen in CUSTOMER_FIELDS:
        if name in body:
            v[name] = coerce(name, kind, maxlen, body[name])
    if v.get("type", "Company") not in ("Company", "Person"):
        raise ApiError(400, "BadRequest", "The value '%s' is not valid for the enumeration type "
                       "'Microsoft.NAV.contactType'." % v["type"])
    if v.get("blocked", " ") not in (" ", "", "Ship", "Invoice", "All"):
        raise ApiError(400, "BadRequest", "The value '%s' is not valid for the enumeration type "
                       "'Microsoft.NAV.customerBlocked'." % v["blocked"])
    if v.get("email") and not EMAIL_RE.match(v["email"]):
        raise ApiError(400, "Application_DialogException",
                       'The email address "%s" is not valid.' % v["email"])
    if v.get("phoneNumber") and PHONE_BAD_RE.search(v["phoneNumber"]):
        raise ApiError(400, "Application_DialogException",
                       "Phone No. must not contain letters in Customer  No.=''.")
    area_id = v.get("taxAreaId")
    area = None
    if area_id is not None and area_id != ZERO_GUID:
        area = next((a for a in company.tax_areas.values() if a["id"] == area_id), None)
        if area is None:
            raise ApiError(400, "Application_DialogException", 'The "taxAreaId" does not match to a Tax Area.')
    elif area_id is None and NEW_CUSTOMER_TAX_AREA in company.tax_areas:
        area = company.tax_areas[NEW_CUSTOMER_TAX_AREA]
    code = v.get("currencyCode", "")
    if code not in ("", company.lcy) and code not in company.currencies:
        raise ApiError(400, "Application_DialogException", 'The "currencyCode" does not match to a Currency.')
    if "number" in v:
        number = v["number"]
        if number in company.customers:
            raise ApiError(409, "Internal_EntityWithSameKeyExists",
                           "The record in table Customer already exists. Identification fields and values: "
                           "No.='%s'" % number)
    else:
        company.customer_seq += 1
        number = "C%05d" % (company.customer_seq * 10)
        while number in company.customers:
            company.customer_seq += 1
            number = "C%05d" % (company.customer_seq * 10)
    template = next(iter(company.customers.values()))
    now = iso_ms()
    cu = {
        "@odata.etag": new_etag(), "id": str(uuid.uuid4()), "number": number,
        "displayName": v.get("displayName", ""), "type": v.get("type", "Company"),
        "addressLine1": v.get("addressLine1", ""), "addressLine2": v.get("addressLine2", ""),
        "city": v.get("city", ""), "state": v.get("state", ""), "country": v.get("country", ""),
        "postalCode": v.get("postalCode", ""), "phoneNumber": v.get("phoneNumber", ""),
        "email": v.get("email", ""), "website": v.get("website", ""),
        "salespersonCode": v.get("salespersonCode", ""), "balanceDue": d0(), "creditLimit": d0(),
        "taxLiable": v.get("taxLiable", company.tax["type"] == "Sales Tax"),
        "taxAreaId": area["id"] if area else ZERO_GUID, "taxAreaDisplayName": area["code"] if area else "",
        "taxRegistrationNumber": v.get("taxRegistrationNumber", ""),
        "currencyId": company.currency_id(code) if code else ZERO_GUID, "currencyCode": code or company.lcy,
        "paymentTermsId": v.get("paymentTermsId", template.get("paymentTermsId", ZERO_GUID)),
        "shipmentMethodId": v.get("shipmentMethodId", template.get("shipmentMethodId", ZERO_GUID)),
        "paymentMethodId": v.get("paymentMethodId", template.get("paymentMethodId", ZERO_GUID)),
        "blocked": v.get("blocked", " "), "lastModifiedDateTime": now, "_created": True,
    }
    company.customers[number] = cu
    return {k: x for k, x in cu.items() if not k.startswith("_")}


def check_prices_incl(company, order):
    # BC: prices including tax cannot be combined with US sales tax
    if order["pricesIncludeTax"] and company.tax["type"] == "Sales Tax":
        raise ApiError(400, "Application_DialogException",
                       "Prices Including Tax cannot be used when the tax calculation type is Sales Tax.")


def line_view(ln):
    return {k: v for k, v in ln.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------
# OData $filter (the subset BC clients use)
# ---------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z]))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\d:T]))
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
)""", re.X)


class FilterSyntax(Exception):
    pass


def _tokens(text):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterSyntax("Syntax error at position %d in '%s'." % (pos, text))
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = val[1:-1].replace("''", "'")
        elif kind == "num":
            val = Decimal(val)
        out.append((kind, val))
        pos = m.end()
    return out


class EntitySetSpec:
    def __init__(self, type_name, table, code_fields):
        self.type_name = type_name
        self.table = table
        self.code_fields = code_fields  # name -> (maxlen, BC field caption)


class FilterParser:
    def __init__(self, text, spec, sample_fields):
        self.toks = _tokens(text)
        self.i = 0
        self.spec = spec
        self.fields = sample_fields
        self.text = text

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, kind):
        t = self.take()
        if t[0] != kind:
            raise FilterSyntax("Syntax error in '%s'." % self.text)
        return t

    def parse(self):
        e = self.or_expr()
        if self.i != len(self.toks):
            raise FilterSyntax("Syntax error at token %d in '%s'." % (self.i, self.text))
        return e

    def or_expr(self):
        left = self.and_expr()
        while self.peek() == ("id", "or"):
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def and_expr(self):
        left = self.unary()
        while self.peek() == ("id", "and"):
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def unary(self):
        if self.peek() == ("id", "not"):
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        if self.peek()[0] == "lp":
            self.take()
            e = self.or_expr()
            self.expect("rp")
            return e
        kind, val = self.peek()
        if kind == "id" and val in ("contains", "startswith", "endswith") and \
                self.i + 1 < len(self.toks) and self.toks[self.i + 1][0] == "lp":
            self.take()
            self.expect("lp")
            fk, fname = self.take()
            if fk != "id":
                raise FilterSyntax("Syntax error in '%s'." % self.text)
            self.field(fname)
            self.expect("comma")
            sk, sval = self.take()
            if sk != "str":
                raise FilterSyntax("Syntax error in '%s'." % self.text)
            self.expect("rp")
            if fname in self.spec.code_fields:
                sval = code_upper(sval.strip())
            op = {"contains": lambda a, b: b in a, "startswith": lambda a, b: a.startswith(b),
                  "endswith": lambda a, b: a.endswith(b)}[val]
            return lambda r: isinstance(r.get(fname), str) and op(r.get(fname), sval)
        return self.comparison()

    def field(self, name):
        if self.fields is not None and name not in self.fields:
            raise ApiError(400, "BadRequest", "Could not find a property named '%s' on type 'Microsoft.NAV.%s'."
                           % (name, self.spec.type_name))
        return name

    def operand(self):
        kind, val = self.take()
        if kind == "id":
            if val == "true":
                return ("lit", True)
            if val == "false":
                return ("lit", False)
            if val == "null":
                return ("lit", None)
            return ("field", self.field(val))
        if kind in ("str", "num", "date"):
            return ("lit", val)
        if kind == "guid":
            return ("lit", val.lower())
        raise FilterSyntax("Syntax error in '%s'." % self.text)

    def comparison(self):
        left = self.operand()
        opk, op = self.take()
        if opk != "id" or op not in ("eq", "ne", "gt", "ge", "lt", "le"):
            raise FilterSyntax("Syntax error in '%s': comparison operator expected." % self.text)
        right = self.operand()
        if left[0] == "lit" and right[0] == "field":
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if left[0] != "field" or right[0] != "lit":
            raise FilterSyntax("Unsupported filter in '%s': compare a property with a literal." % self.text)
        fname, lit = left[1], right[1]
        if fname in self.spec.code_fields and isinstance(lit, str):
            maxlen, caption = self.spec.code_fields[fname]
            lit = code_upper(lit.strip())
            if len(lit) > maxlen:
                raise ApiError(400, "Application_FilterErrorException",
                               "The filter \"='%s'\" is not valid for the %s field on the %s table. The length of "
                               "the string is %d, but it must be less than or equal to %d characters. Value: %s"
                               % (lit, caption, self.spec.table, len(lit), maxlen, lit))
        if isinstance(lit, Decimal):
            def conv(x):
                try:
                    return to_dec(x)
                except (ValueError, InvalidOperation):
                    return x
        else:
            def conv(x):
                return x.lower() if isinstance(x, str) and isinstance(lit, str) and GUID_RE.match(lit) else x
        cmp = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
               "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}[op]

        def pred(r):
            a = conv(r.get(fname))
            try:
                return cmp(a, lit)
            except TypeError:
                return False
        return pred


# ---------------------------------------------------------------------------
# Faults and limits
# ---------------------------------------------------------------------------

FAULT_BODIES = {
    500: ("Internal_ServerError", "An internal error occurred while processing the request."),
    502: ("Internal_ServerError", "The gateway received an invalid response from the service (bad gateway)."),
    503: ("Internal_TenantUnavailable", "The tenant '{tenant}' is not accessible."),
    504: ("Internal_ServerError", "The request exceeded the maximum execution time and was cancelled "
                                  "(gateway timeout)."),
}
FAULT_KEYS = {"method", "path_regex", "times", "latency_ms", "status", "retry_after", "action", "hold_ms",
              "code", "message", "probability", "seed"}
FAULT_ACTIONS = {"commit_then_fail", "commit_then_hold", "commit_then_drop", "drop"}


class FaultRule:
    def __init__(self, d):
        if not isinstance(d, dict):
            raise ValueError("each rule must be a JSON object")
        bad = set(d) - FAULT_KEYS
        if bad:
            raise ValueError("unknown rule keys: %s" % ", ".join(sorted(bad)))
        self.spec = dict(d)
        self.method = d.get("method")
        self.regex = re.compile(d["path_regex"]) if d.get("path_regex") else None
        self.times = d.get("times")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 0):
            raise ValueError("times must be a non-negative integer")
        self.action = d.get("action")
        self.status = d.get("status")
        self.latency_ms = d.get("latency_ms")
        self.hold_ms = d.get("hold_ms", 0)
        self.retry_after = d.get("retry_after")
        self.applied = 0
        # a rule that hits only some of the requests it matches, drawn from
        # its own generator (seeded: the same requests in the same order get
        # the same faults); a request it spares goes on to the next rule
        self.probability = d.get("probability")
        if self.probability is not None:
            p = self.probability
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 1:
                raise ValueError("probability must be a number in (0, 1]")
        seed = d.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("seed must be an integer")
        self.rng = random.Random(seed)
        self.spared = 0
        if self.action is not None:
            if self.action not in FAULT_ACTIONS:
                raise ValueError("unknown action %r" % self.action)
            if self.action == "commit_then_fail" and self.status is None:
                self.status = 500
            if self.action == "commit_then_hold" and not isinstance(self.hold_ms, (int, float)):
                raise ValueError("hold_ms must be a number")
            self.kind = self.action
        elif self.status is not None:
            self.kind = "status"
        elif self.latency_ms is not None:
            if not isinstance(self.latency_ms, (int, float)) or self.latency_ms < 0:
                raise ValueError("latency_ms must be a non-negative number")
            self.kind = "latency"
        else:
            raise ValueError("a rule needs one action: latency_ms, status or action")
        if self.status is not None and (not isinstance(self.status, int) or not 400 <= self.status <= 599):
            raise ValueError("status must be an HTTP error status")

    def matches(self, method, target):
        if self.times is not None and self.applied >= self.times:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.regex and not self.regex.search(target):
            return False
        if self.probability is not None and self.rng.random() >= self.probability:
            self.spared += 1
            return False
        return True

    def view(self):
        d = dict(self.spec)
        d["applied"] = self.applied
        if self.probability is not None:
            d["spared"] = self.spared
        if self.times is not None:
            d["remaining"] = self.times - self.applied
        return d


class PrincipalState:
    def __init__(self):
        self.active = 0
        self.queued = 0
        self.next_ticket = 0
        self.serving = 0
        self.times = collections.deque()
        self.peak_active = 0
        self.peak_queued = 0
        self.accepted = 0
        self.rejected = 0


class Limiter:
    """Per principal: N requests processed at once, a bounded FIFO queue behind
    them, and a sliding window request budget."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.cond = threading.Condition()
        self.p = {}

    def acquire(self, principal):
        cfg = self.cfg
        with self.cond:
            st = self.p.setdefault(principal, PrincipalState())
            now = time.monotonic()
            window = cfg["rate_window_s"]
            while st.times and st.times[0] <= now - window:
                st.times.popleft()
            if len(st.times) >= cfg["rate_limit"]:
                st.rejected += 1
                wait = max(1, math.ceil(st.times[0] + window - now))
                raise ApiError(429, "Application_TooManyRequests",
                               "Too many requests reached. Actual (%d). Maximum (%d)."
                               % (len(st.times) + 1, cfg["rate_limit"]), [("Retry-After", str(wait))])
            if st.active >= cfg["max_concurrent"] or st.queued > 0:
                if st.queued >= cfg["max_queue"]:
                    st.rejected += 1
                    raise ApiError(429, "Application_TooManyRequests",
                                   "Too many requests reached. Actual (%d). Maximum (%d)."
                                   % (st.active + st.queued + 1, cfg["max_concurrent"] + cfg["max_queue"]),
                                   [("Retry-After", "1")])
                ticket = st.next_ticket
                st.next_ticket += 1
                st.queued += 1
                st.peak_queued = max(st.peak_queued, st.queued)
                st.times.append(now)
                while st.active >= cfg["max_concurrent"] or st.serving != ticket:
                    self.cond.wait()
                st.queued -= 1
                st.serving += 1
                self.cond.notify_all()
            else:
                st.times.append(now)
            st.active += 1
            st.accepted += 1
            st.peak_active = max(st.peak_active, st.active)

    def release(self, principal):
        with self.cond:
            self.p[principal].active -= 1
            self.cond.notify_all()

    def stats(self):
        with self.cond:
            return {k: {"active": s.active, "queued": s.queued, "peakActive": s.peak_active,
                        "peakQueued": s.peak_queued, "accepted": s.accepted, "rejected429": s.rejected,
                        "inWindow": len(s.times)} for k, s in self.p.items()}

    def reset(self):
        with self.cond:
            for s in self.p.values():
                s.times.clear()
                s.peak_active = s.active
                s.peak_queued = s.queued
                s.accepted = s.rejected = 0


# ---------------------------------------------------------------------------
# The sandbox application
# ---------------------------------------------------------------------------

class Sandbox:
    def __init__(self, args):
        self.args = args
        self.tenant = args.tenant
        self.clients = {args.client_id: args.client_secret}
        for spec in args.extra_client or []:
            cid, _, sec = spec.partition(":")
            if not cid or not sec:
                raise SystemExit("--extra-client wants ID:SECRET")
            self.clients[cid] = sec
        self.base_cfg = {
            "token_ttl": args.token_ttl, "latency_ms": args.latency_ms, "max_concurrent": args.max_concurrent,
            "max_queue": args.max_queue, "rate_limit": args.rate_limit, "rate_window_s": args.rate_window_s,
            "max_execution_ms": args.max_execution_ms,
        }
        self.cfg = dict(self.base_cfg)
        self.lock = threading.RLock()
        self.items_seed, self.customers_seed = load_seed(args.fixtures)
        self.created = iso_ms()
        self.tokens = {}  # sha256(token) -> {"client": id, "exp": epoch}
        self.faults = []
        self.log = []
        self.log_seq = 0
        self.log_dropped = 0
        self.echo = []
        self.echo_plan = {"statuses": [], "delay_ms": 0}
        self.limiter = Limiter(self.cfg)
        self.dirty = False
        self.state_file = args.state_file
        self.seed_companies()
        if self.state_file and os.path.exists(self.state_file):
            self.load_state()

    # -- state ------------------------------------------------------------
    def seed_companies(self):
        self.companies = collections.OrderedDict()
        for cdef in COMPANY_DEFS:
            c = Company(cdef, self.items_seed, self.customers_seed, self.created)
            self.companies[c.id] = c

    def load_state(self):
        with open(self.state_file, encoding="utf-8") as f:
            d = json.load(f, object_hook=_state_hook, parse_float=Decimal)
        for cid, cd in d.get("companies", {}).items():
            if cid in self.companies:
                self.companies[cid].restore(cd)
        now = time.time()
        self.tokens = {h: t for h, t in d.get("tokens", {}).items() if t["exp"] > now}

    def save_state(self):
        if not self.state_file:
            return
        with self.lock:
            if not self.dirty:
                return
            data = {"companies": {cid: c.dump() for cid, c in self.companies.items()},
                    "tokens": self.tokens}
            blob = json.dumps(data, default=_state_default, ensure_ascii=False)
            self.dirty = False
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def touch(self):
        self.dirty = True

    def reset(self):
        with self.lock:
            self.seed_companies()
            self.faults = []
            self.log = []
            self.log_seq = 0
            self.log_dropped = 0
            self.echo = []
            self.echo_plan = {"statuses": [], "delay_ms": 0}
            self.touch()
        shopify.reset(self)
        with self.limiter.cond:
            self.cfg.clear()
            self.cfg.update(self.base_cfg)
            self.limiter.cond.notify_all()
        self.limiter.reset()

    # -- request log ------------------------------------------------------
    def log_add(self, entry):
        with self.lock:
            self.log_seq += 1
            entry["seq"] = self.log_seq
            self.log.append(entry)
            if len(self.log) > 500000:
                del self.log[:100000]
                self.log_dropped += 100000

    # -- faults -----------------------------------------------------------
    def match_fault(self, method, target):
        with self.lock:
            for rule in self.faults:
                if rule.matches(method, target):
                    rule.applied += 1
                    return rule
        return None

    def fault_response(self, rule):
        status = rule.status
        code, msg = FAULT_BODIES.get(status, ("Internal_ServerError", "Injected failure."))
        if status == 429:
            code, msg = "Application_TooManyRequests", "Too many requests reached. Actual (101). Maximum (100)."
        code = rule.spec.get("code", code)
        msg = rule.spec.get("message", msg).replace("{tenant}", self.tenant)
        headers = []
        ra = rule.retry_after
        if ra is None and status in (429, 502, 503):
            ra = 1
        if ra is not None:
            headers.append(("Retry-After", str(ra)))
        return ApiError(status, code, msg, headers)

    # -- Entra token endpoint -------------------------------------------------
    def entra_error(self, status, error, code, text):
        ts = utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        body = {
            "error": error,
            "error_description": "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s"
                                 % (code, text, trace, corr, ts),
            "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
            "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
        }
        return status, body

    def token(self, tenant, body, ctype):
        if tenant != self.tenant:
            return self.entra_error(400, "invalid_tenant", 90002,
                                    "Tenant '%s' not found. Check to make sure you have the correct tenant ID and "
                                    "are signing into the correct cloud." % tenant)
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            form = {}
        f = {k: v[0] for k, v in form.items()}
        if "grant_type" not in f:
            return self.entra_error(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: 'grant_type'.")
        if f["grant_type"] != "client_credentials":
            return self.entra_error(400, "unsupported_grant_type", 70003,
                                    "The app requested an unsupported grant type '%s'." % f["grant_type"])
        cid = f.get("client_id", "")
        if not cid:
            return self.entra_error(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: 'client_id'.")
        if cid not in self.clients:
            return self.entra_error(400, "unauthorized_client", 700016,
                                    "Application with identifier '%s' was not found in the directory '%s'. The "
                                    "application may not be installed in this tenant, or the request went to the "
                                    "wrong tenant." % (cid, tenant))
        sec = f.get("client_secret")
        if not sec:
            return self.entra_error(401, "invalid_client", 7000216,
                                    "'client_assertion', 'client_secret' or 'request' is required for the "
                                    "'client_credentials' grant type.")
        if not hmac.compare_digest(sec.encode(), self.clients[cid].encode()):
            return self.entra_error(401, "invalid_client", 7000215,
                                    "Invalid client secret provided. Send the value of the client secret, not its "
                                    "ID, for app '%s'." % cid)
        scope = f.get("scope", "")
        if not scope:
            return self.entra_error(400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: 'scope'.")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return self.entra_error(400, "invalid_scope", 1002012,
                                    "The provided value for scope %s is not valid. Client credential flows must "
                                    "have a scope value with /.default suffixed to the resource identifier "
                                    "(application ID URI)." % scope)
        resource = scopes[0][: -len("/.default")]
        if resource.rstrip("/") != BC_RESOURCE:
            return self.entra_error(400, "invalid_resource", 500011,
                                    "The resource principal named %s was not found in the tenant named %s."
                                    % (resource, tenant))
        tok = secrets.token_urlsafe(48)
        ttl = int(self.cfg["token_ttl"])
        with self.lock:
            now = time.time()
            self.tokens = {h: t for h, t in self.tokens.items() if t["exp"] > now}
            self.tokens[hashlib.sha256(tok.encode()).hexdigest()] = {"client": cid, "exp": now + ttl}
            self.touch()
        return 200, {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": tok}

    def authenticate(self, headers):
        auth = headers.get("Authorization", "")
        principal = None
        if auth[:7].lower() == "bearer ":
            h = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
            with self.lock:
                t = self.tokens.get(h)
            if t and t["exp"] > time.time():
                principal = t["client"]
        if principal is None:
            raise ApiError(401, "Authentication_InvalidCredentials", "The server has rejected the client credentials.",
                           [("WWW-Authenticate", 'Bearer authorization_uri="https://login.microsoftonline.com/%s/'
                                                 'oauth2/authorize", resource_id="%s"' % (self.tenant, BC_RESOURCE))])
        return principal

    # -- BC routing -------------------------------------------------------------
    def company(self, key):
        if not GUID_RE.match(key or ""):
            raise ApiError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")
        c = self.companies.get(key.lower())
        if c is None:
            raise ApiError(404, "Internal_CompanyNotFound", "Cannot process the request because the company "
                           "'%s' cannot be found." % key)
        return c

    def bc(self, method, rest, params, body, ctx, headers):
        """rest: path after /api/v2.0 ; returns (status, obj, extra_headers)."""
        segs = [s for s in rest.split("/") if s]
        parsed = []
        for s in segs:
            m = re.match(r"^([A-Za-z][A-Za-z0-9.]*)(?:\((.*)\))?$", s)
            if not m:
                raise ApiError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")
            key = m.group(2)
            if key is not None and key.startswith("'") and key.endswith("'"):
                key = key[1:-1]
            parsed.append((m.group(1), key))
        if not parsed:
            if method != "GET":
                raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for the service document are not "
                               "allowed." % method)
            sets = ["companies"]
            return 200, {"@odata.context": ctx + "$metadata", "value": [
                {"name": n, "kind": "EntitySet", "url": n} for n in sets]}, []
        name, key = parsed[0]
        if name != "companies":
            raise ApiError(404, "BadRequest_ResourceNotFound", "Resource not found for the segment '%s'." % name)
        if key is None:
            if len(parsed) > 1:
                raise ApiError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")
            if method != "GET":
                raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for 'companies' of EdmType "
                               "'Entity' are not allowed within Microsoft Dynamics 365 Business Central OData web "
                               "services." % method)
            with self.lock:
                rows = [c.view() for c in self.companies.values()]
            spec = EntitySetSpec("company", "Company", {"name": (30, "Name")})
            return self.list_response(rows, params, spec, ctx + "$metadata#companies", None)
        company = self.company(key)
        cctx = ctx + "$metadata#companies(%s)" % company.id
        if len(parsed) == 1:
            if method != "GET":
                raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for 'companies' are not allowed."
                               % method)
            return self.entity_response(company.view(), params, ctx + "$metadata#companies/$entity", None)
        with self.lock:
            return self.company_route(method, company, parsed[1:], params, body, cctx, headers)

    def list_response(self, rows, params, spec, context, expander):
        rows, count = self.apply_query(rows, params, spec, expander)
        out = collections.OrderedDict()
        out["@odata.context"] = context + self.expand_ctx(params)
        if params.get("$count", [""])[0] == "true":
            out["@odata.count"] = count
        out["value"] = rows
        return 200, out, []

    @staticmethod
    def expand_ctx(params):
        exp = params.get("$expand", [""])[0]
        return "(%s)" % ",".join(e.strip() + "()" for e in exp.split(",") if e.strip()) if exp else ""

    def entity_response(self, row, params, context, expander, status=200):
        known = {"$expand", "$select", "$schemaversion"}
        for p in params:
            if p.startswith("$") and p not in known:
                raise ApiError(400, "BadRequest", "The query parameter '%s' is not supported for a single entity." % p)
        row = dict(row)
        self.expand_row(row, params, expander)
        row = self.select_row(row, params)
        out = collections.OrderedDict()
        out["@odata.context"] = context
        out.update(row)
        return status, out, [("ETag", row.get("@odata.etag") or "")] if row.get("@odata.etag") else []

    def expand_row(self, row, params, expander):
        exp = params.get("$expand", [""])[0]
        for e in [x.strip() for x in exp.split(",") if x.strip()]:
            if expander is None or e not in expander[1]:
                raise ApiError(400, "BadRequest", "Could not find a property named '%s' on type 'Microsoft.NAV.%s'."
                               % (e, expander[0] if expander else "entity"))
            row[e] = expander[1][e](row)

    @staticmethod
    def select_row(row, params):
        sel = params.get("$select", [""])[0]
        if not sel:
            return row
        keep = {s.strip() for s in sel.split(",") if s.strip()}
        exp = params.get("$expand", [""])[0]
        keep |= {e.strip() for e in exp.split(",") if e.strip()}
        return {k: v for k, v in row.items() if k == "@odata.etag" or k in keep}

    def apply_query(self, rows, params, spec, expander):
        known = {"$filter", "$top", "$skip", "$expand", "$select", "$count", "$orderby", "$schemaversion"}
        for p in params:
            if p.startswith("$") and p not in known:
                raise ApiError(400, "BadRequest", "The query parameter '%s' is not supported." % p)
        flt = params.get("$filter", [""])[0]
        if flt.strip():
            # property names are checked against the entities at hand; an empty set matches nothing anyway
            fields = {k for k in rows[0] if not k.startswith("_")} if rows else None
            try:
                pred = FilterParser(flt, spec, fields).parse()
            except FilterSyntax as e:
                raise ApiError(400, "BadRequest_NotFound", str(e))
            rows = [r for r in rows if pred(r)]
        ob = params.get("$orderby", [""])[0].strip()
        if ob:
            for part in reversed([p.strip() for p in ob.split(",") if p.strip()]):
                bits = part.split()
                fname = bits[0]
                desc = len(bits) > 1 and bits[1].lower() == "desc"
                rows.sort(key=lambda r: (r.get(fname) is None, r.get(fname) if r.get(fname) is not None else ""),
                          reverse=desc)
        count = len(rows)
        try:
            skip = int(params.get("$skip", ["0"])[0] or 0)
            top = params.get("$top", [None])[0]
            top = int(top) if top not in (None, "") else None
        except ValueError:
            raise ApiError(400, "BadRequest", "Invalid value for $top or $skip.")
        if skip < 0 or (top is not None and top < 0):
            raise ApiError(400, "BadRequest", "Invalid value for $top or $skip.")
        rows = rows[skip:]
        if top is not None:
            rows = rows[:top]
        out = []
        for r in rows:
            r = {k: v for k, v in r.items() if not k.startswith("_")}
            self.expand_row(r, params, expander)
            out.append(self.select_row(r, params))
        return out, count

    # specs used for $filter on each entity set
    SPECS = {
        "items": EntitySetSpec("item", "Item", {"number": (20, "No."), "baseUnitOfMeasureCode": (10, "Base Unit of "
                               "Measure"), "itemCategoryCode": (20, "Item Category Code"),
                               "taxGroupCode": (20, "Tax Group Code")}),
        "customers": EntitySetSpec("customer", "Customer", {"number": (20, "No."), "country": (10, "Country/Region "
                                   "Code"), "postalCode": (20, "Post Code"), "currencyCode": (10, "Currency Code")}),
        "accounts": EntitySetSpec("account", "G/L Account", {"number": (20, "No.")}),
        "currencies": EntitySetSpec("currency", "Currency", {"code": (10, "Code")}),
        "taxAreas": EntitySetSpec("taxArea", "Tax Area", {"code": (20, "Code")}),
        "salesOrders": EntitySetSpec("salesOrder", "Sales Order Entity Buffer", {
            "externalDocumentNumber": (35, "External Document No."), "number": (20, "No."),
            "customerNumber": (20, "Sell-to Customer No."), "currencyCode": (10, "Currency Code"),
            "billToCustomerNumber": (20, "Bill-to Customer No.")}),
        "salesInvoices": EntitySetSpec("salesInvoice", "Sales Invoice Entity Aggregate", {
            "externalDocumentNumber": (35, "External Document No."), "number": (20, "No."),
            "customerNumber": (20, "Sell-to Customer No."), "orderNumber": (20, "Order No."),
            "currencyCode": (10, "Currency Code")}),
        "salesShipments": EntitySetSpec("salesShipment", "Sales Shipment Header", {
            "externalDocumentNumber": (35, "External Document No."), "number": (20, "No."),
            "customerNumber": (20, "Sell-to Customer No."), "orderNumber": (20, "Order No.")}),
        "salesOrderLines": EntitySetSpec("salesOrderLine", "Sales Invoice Line Aggregate", {
            "lineObjectNumber": (20, "No.")}),
        "salesInvoiceLines": EntitySetSpec("salesInvoiceLine", "Sales Invoice Line Aggregate", {
            "lineObjectNumber": (20, "No.")}),
        "salesShipmentLines": EntitySetSpec("salesShipmentLine", "Sales Shipment Line", {
            "lineObjectNumber": (20, "No.")}),
    }

    DOCS = {
        # entity set -> (company attribute, line nav, line set, type name for not-found)
        "salesOrders": ("orders", "salesOrderLines", "Sales Order Entity Buffer"),
        "salesInvoices": ("invoices", "salesInvoiceLines", "Sales Invoice Entity Aggregate"),
        "salesShipments": ("shipments", "salesShipmentLines", "Sales Shipment Header"),
    }

    def doc_view(self, doc):
        return {k: v for k, v in doc.items() if not k.startswith("_")}

    def company_route(self, method, company, parsed, params, body, cctx, headers):
        name, key = parsed[0]
        if name in ("items", "customers", "accounts", "currencies", "taxAreas"):
            table = {"items": company.items, "customers": company.customers, "accounts": company.accounts,
                     "currencies": company.currencies, "taxAreas": company.tax_areas}[name]
            if name == "customers" and method == "POST" and key is None and len(parsed) == 1:
                cu = build_customer(company, body)
                self.touch()
                return self.entity_response(cu, params, cctx + "/customers/$entity", None, status=201)
            if method != "GET" or len(parsed) > 1:
                raise ApiError(405, "BadRequest_MethodNotAllowed", "This sandbox serves '%s' read-only." % name)
            rows = list(table.values())
            if key is None:
                return self.list_response(rows, params, self.SPECS[name], cctx + "/" + name, None)
            row = next((r for r in rows if r["id"] == key.lower()), None)
            if row is None:
                raise ApiError(404, "Internal_RecordNotFound", "The %s does not exist. Identification fields and "
                               "values: Id='%s'" % (self.SPECS[name].table, key))
            return self.entity_response(row, params, cctx + "/" + name + "/$entity", None)
        if name not in self.DOCS:
            raise ApiError(404, "BadRequest_ResourceNotFound", "Resource not found for the segment '%s'." % name)
        attr, line_nav, table_name = self.DOCS[name]
        docs = getattr(company, attr)
        expander = (self.SPECS[name].type_name,
                    {line_nav: lambda row, docs=docs: [line_view(l) for l in docs[row["id"]]["_lines"]]})
        if key is None:
            if len(parsed) > 1:
                raise ApiError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")
            if method == "GET":
                return self.list_response(list(docs.values()), params, self.SPECS[name], cctx + "/" + name, expander)
            if method == "POST" and name == "salesOrders":
                order = build_order(company, body)
                order["number"] = company.next_number("order")
                order["@odata.etag"] = new_etag()
                company.orders[order["id"]] = order
                self.touch()
                st, out, hdrs = self.entity_response(self.doc_view(order), params,
                                                     cctx + "/salesOrders/$entity", expander, status=201)
                hdrs.append(("Location", "%s/companies(%s)/salesOrders(%s)" % (
                    cctx.split("$metadata")[0].rstrip("/"), company.id, order["id"])))
                return st, out, hdrs
            raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for '%s' are not allowed." %
                           (method, name))
        doc = docs.get(key.lower()) if GUID_RE.match(key) else None
        if not GUID_RE.match(key):
            raise ApiError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")
        if doc is None:
            raise ApiError(404, "Internal_RecordNotFound", "The %s does not exist. Identification fields and values: "
                           "Id='%s'" % (table_name, key))
        if len(parsed) == 1:
            if method == "GET":
                return self.entity_response(self.doc_view(doc), params, cctx + "/" + name + "/$entity", expander)
            if name == "salesOrders" and method == "PATCH":
                return self.patch_order(company, doc, body, headers, params, cctx, expander)
            if name == "salesOrders" and method == "DELETE":
                self.check_if_match(doc, headers, required=False)
                self.check_open(doc)
                del company.orders[doc["id"]]
                self.touch()
                return 204, None, []
            raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for '%s' are not allowed." %
                           (method, name))
        sub, subkey = parsed[1]
        if name == "salesOrders" and sub == "Microsoft.NAV.shipAndInvoice" and len(parsed) == 2:
            if method != "POST":
                raise ApiError(405, "BadRequest_MethodNotAllowed", "Bound actions need POST.")
            self.post_order(company, doc)
            return 204, None, []
        if sub != line_nav or len(parsed) > 2:
            raise ApiError(404, "BadRequest_ResourceNotFound", "Resource not found for the segment '%s'." % sub)
        lines = doc["_lines"]
        lctx = cctx + "/%s(%s)/%s" % (name, doc["id"], sub)
        if subkey is None:
            if method == "GET":
                return self.list_response([line_view(l) for l in lines], params, self.SPECS[sub], lctx, None)
            if method == "POST" and name == "salesOrders":
                self.check_open(doc)
                ln = build_line(company, doc, body, (max([l["sequence"] for l in lines] or [0]) // 10000 + 1) * 10000,
                                {l["sequence"] for l in lines})
                saved = list(lines)
                lines.append(ln)
                lines.sort(key=lambda l: l["sequence"])
                try:
                    recompute_order(doc)
                except ApiError:
                    doc["_lines"] = saved
                    recompute_order(doc)
                    raise
                doc["@odata.etag"] = new_etag()
                doc["lastModifiedDateTime"] = iso_ms()
                self.touch()
                return self.entity_response(line_view(ln), params, lctx + "/$entity", None, status=201)
            raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for '%s' are not allowed." % (method, sub))
        ln = next((l for l in lines if l["id"] == subkey.lower()), None)
        if ln is None:
            raise ApiError(404, "Internal_RecordNotFound", "The line does not exist. Identification fields and "
                           "values: Id='%s'" % subkey)
        if method == "GET":
            return self.entity_response(line_view(ln), params, lctx + "/$entity", None)
        if method == "DELETE" and name == "salesOrders":
            self.check_if_match(ln, headers, required=False)
            self.check_open(doc)
            lines.remove(ln)
            recompute_order(doc)
            doc["@odata.etag"] = new_etag()
            doc["lastModifiedDateTime"] = iso_ms()
            self.touch()
            return 204, None, []
        if method == "PATCH" and name == "salesOrders":
            return self.patch_line(company, doc, ln, body, headers, params, lctx)
        raise ApiError(405, "BadRequest_MethodNotAllowed", "'%s' requests for '%s' are not allowed." % (method, sub))

    @staticmethod
    def check_if_match(doc, headers, required=True):
        im = headers.get("If-Match")
        if im is None:
            if required:
                raise ApiError(400, "BadRequest_InvalidToken", "Could not validate the client concurrency token "
                               "required by the service. Please provide a valid token in the client request.")
            return
        if im.strip() != "*" and im.strip() != doc["@odata.etag"]:
            raise ApiError(409, "Request_EntityChanged", "Another user has already changed the record.")

    @staticmethod
    def check_open(doc):
        # the API's "Draft" is BC's Open status; "Open" is BC's Released
        if doc.get("status") not in ("Draft", None):
            raise ApiError(400, "Application_FieldValidationException",
                           "Status must be equal to 'Open'  in Sales Header: Document Type=Order, No.=%s. Current "
                           "value is 'Released'." % doc["number"])

    def patch_line(self, company, doc, ln, body, headers, params, lctx):
        """PATCH one line: needs the line's current ETag; the order must be
        open (not released); the changed line is validated like a new one
        and the order's amounts and tax are calculated again."""
        self.check_if_match(ln, headers)
        self.check_open(doc)
        check_properties(body, LINE_FIELDS, LINE_READONLY, "salesOrderLine")
        for k in ("lineType", "lineObjectNumber", "itemId", "accountId", "sequence", "documentId"):
            if k in body and body[k] != ln.get(k):
                raise ApiError(400, "Application_DialogException",
                               'The value for "%s" cannot be modified.' % k)
        raw = {k: v for k, v in line_view(ln).items() if k in {f[0] for f in LINE_FIELDS}
               and k not in ("itemId", "accountId", "documentId", "sequence", "unitOfMeasureId",
                             "itemVariantId", "locationId", "shipmentDate", "invoiceQuantity", "shipQuantity")}
        raw.update(body)
        if "discountAmount" in body:
            raw.pop("discountPercent", None)
        elif "discountPercent" in body:
            raw.pop("discountAmount", None)
        elif ln.get("_discountGiven") == "percent":
            raw.pop("discountAmount", None)
        elif ln.get("_discountGiven") != "amount":
            raw.pop("discountAmount", None)
            raw.pop("discountPercent", None)
        others = {l["sequence"] for l in doc["_lines"] if l is not ln}
        new = build_line(company, doc, raw, ln["sequence"], others)
        new["id"] = ln["id"]
        saved = list(doc["_lines"])
        doc["_lines"] = [new if l is ln else l for l in doc["_lines"]]
        try:
            recompute_order(doc)
        except ApiError:
            doc["_lines"] = saved
            recompute_order(doc)
            raise
        doc["@odata.etag"] = new_etag()
        doc["lastModifiedDateTime"] = iso_ms()
        self.touch()
        return self.entity_response(line_view(new), params, lctx + "/$entity", None)

    def patch_order(self, company, doc, body, headers, params, cctx, expander):
        self.check_if_match(doc, headers)
        check_properties(body, ORDER_FIELDS, ORDER_READONLY, "salesOrder")
        changes = {}
        for name, kind, maxlen in ORDER_FIELDS:
            if name in body:
                if name not in ORDER_PATCHABLE:
                    raise ApiError(400, "BadRequest_InvalidOperation", "The sandbox does not support changing '%s' "
                                   "on an existing order." % name)
                changes[name] = coerce(name, kind, maxlen, body[name])
        self.check_open(doc)
        backup = dict(doc)
        doc.update(changes)
        try:
            check_prices_incl(company, doc)
            recompute_order(doc)
        except ApiError:
            doc.clear()
            doc.update(backup)
            raise
        doc["@odata.etag"] = new_etag()
        doc["lastModifiedDateTime"] = iso_ms()
        self.touch()
        return self.entity_response(self.doc_view(doc), params, cctx + "/salesOrders/$entity", expander)

    def post_order(self, company, order):
        """Ship and invoice: the order leaves salesOrders, a posted invoice and shipment appear."""
        lines = order["_lines"]
        if not any(l["lineType"] != "Comment" and l["quantity"] != 0 for l in lines):
            raise ApiError(400, "Application_DialogException", "There is nothing to post.")
        now = iso_ms()
        inv_id, shp_id = str(uuid.uuid4()), str(uuid.uuid4())
        common = {k: order[k] for k in (
            "externalDocumentNumber", "postingDate", "customerId", "customerNumber", "customerName", "billToName",
            "billToCustomerId", "billToCustomerNumber", "shipToName", "shipToContact", "sellToAddressLine1",
            "sellToAddressLine2", "sellToCity", "sellToCountry", "sellToState", "sellToPostCode",
            "billToAddressLine1", "billToAddressLine2", "billToCity", "billToCountry", "billToState",
            "billToPostCode", "shipToAddressLine1", "shipToAddressLine2", "shipToCity", "shipToCountry",
            "shipToState", "shipToPostCode")}
        invoice = {"@odata.etag": new_etag(), "id": inv_id, "number": company.next_number("invoice")}
        invoice.update(common)
        invoice.update({
            "invoiceDate": order["postingDate"], "dueDate": order["postingDate"],
            "customerPurchaseOrderReference": "", "currencyId": order["currencyId"],
            "currencyCode": order["currencyCode"], "orderId": order["id"], "orderNumber": order["number"],
            "paymentTermsId": order["paymentTermsId"], "shipmentMethodId": order["shipmentMethodId"],
            "salesperson": order["salesperson"], "pricesIncludeTax": order["pricesIncludeTax"],
            "remainingAmount": order["totalAmountIncludingTax"], "discountAmount": order["discountAmount"],
            "discountAppliedBeforeTax": True, "totalAmountExcludingTax": order["totalAmountExcludingTax"],
            "totalTaxAmount": order["totalTaxAmount"], "totalAmountIncludingTax": order["totalAmountIncludingTax"],
            "status": "Open", "lastModifiedDateTime": now, "phoneNumber": order["phoneNumber"],
            "email": order["email"],
        })
        invoice["_lines"] = []
        for l in lines:
            il = {k: v for k, v in l.items() if not k.startswith("_") and k not in (
                "shipmentDate", "shippedQuantity", "invoicedQuantity", "invoiceQuantity", "shipQuantity")}
            il.update({"@odata.etag": new_etag(), "id": str(uuid.uuid4()), "documentId": inv_id})
            invoice["_lines"].append(il)
        shipment = {"@odata.etag": new_etag(), "id": shp_id, "number": company.next_number("shipment")}
        shipment.update(common)
        shipment.update({
            "documentDate": order["orderDate"], "shipmentDate": order["postingDate"],
            "customerPurchaseOrderReference": "", "orderNumber": order["number"], "dueDate": order["postingDate"],
            "currencyCode": order["currencyCode"], "pricesIncludeTax": order["pricesIncludeTax"],
            "salesperson": order["salesperson"], "lastModifiedDateTime": now, "phoneNumber": order["phoneNumber"],
            "email": order["email"],
        })
        for k in ("customerId", "billToCustomerId"):
            shipment.pop(k, None)
        shipment["_lines"] = [{
            "@odata.etag": new_etag(), "id": str(uuid.uuid4()), "documentId": shp_id, "documentNo": shipment["number"],
            "sequence": l["sequence"], "lineType": l["lineType"], "lineObjectNumber": l["lineObjectNumber"],
            "description": l["description"], "unitOfMeasureCode": l["unitOfMeasureCode"],
            "unitPrice": l["unitPrice"], "quantity": l["quantity"], "discountPercent": l["discountPercent"],
            "taxPercent": l["taxPercent"], "shipmentDate": order["postingDate"],
        } for l in lines]
        company.invoices[inv_id] = invoice
        company.shipments[shp_id] = shipment
        del company.orders[order["id"]]
        snapshot = dict(order)
        snapshot["lastModifiedDateTime"] = now
        company.posted[order["id"]] = {"order": snapshot, "invoiceId": inv_id, "shipmentId": shp_id}
        self.touch()
        return invoice, shipment

    # -- control API ----------------------------------------------------------
    def control(self, method, path, params, body, handler):
        parts = [p for p in path[len("/_sandbox/"):].split("/") if p]

        def need_json():
            try:
                return json.loads(body.decode("utf-8") or "null", parse_float=Decimal)
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "BadRequest", "Invalid JSON body.")

        if parts == ["health"] and method == "GET":
            return 200, {"ok": True, "tenant": self.tenant,
                         "companies": [{"id": c.id, "name": c.name, "lcy": c.lcy} for c in self.companies.values()]}
        if parts == ["reset"] and method == "POST":
            self.reset()
            return 200, {"ok": True}
        if parts[:1] == ["shopify"]:
            answer = shopify.control_request(self, method, parts[1:], params, body)
            if answer is not None:
                return answer
        if parts == ["requests"]:
            if method == "GET":
                since = int(params.get("since", ["0"])[0] or 0)
                with self.lock:
                    rows = [e for e in self.log if e["seq"] > since]
                    return 200, {"value": rows, "last": self.log_seq, "dropped": self.log_dropped}
            if method == "DELETE":
                with self.lock:
                    self.log = []
                return 200, {"ok": True}
        if parts == ["faults"]:
            if method == "POST":
                data = need_json()
                if isinstance(data, dict):
                    data = [data]
                if not isinstance(data, list):
                    raise ApiError(400, "BadRequest", "Send a JSON list of fault rules.")
                try:
                    rules = [FaultRule(plain(d)) for d in data]
                except (ValueError, re.error) as e:
                    raise ApiError(400, "BadRequest", "Bad fault rule: %s" % e)
                with self.lock:
                    self.faults = rules
                return 200, {"value": [r.view() for r in rules]}
            if method == "GET":
                with self.lock:
                    return 200, {"value": [r.view() for r in self.faults]}
            if method == "DELETE":
                with self.lock:
                    self.faults = []
                return 200, {"ok": True}
        if parts == ["config"]:
            if method == "POST":
                data = plain(need_json())
                if not isinstance(data, dict) or set(data) - set(self.cfg):
                    raise ApiError(400, "BadRequest", "Known settings: %s" % ", ".join(sorted(self.cfg)))
                for k, val in data.items():
                    if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
                        raise ApiError(400, "BadRequest", "%s must be a non-negative number" % k)
                    if k in ("max_concurrent", "rate_limit", "rate_window_s", "max_execution_ms") and val <= 0:
                        raise ApiError(400, "BadRequest", "%s must be greater than 0" % k)
                with self.limiter.cond:
                    self.cfg.update(data)
                    self.limiter.cond.notify_all()
            return 200, dict(self.cfg)
        if len(parts) == 2 and parts[0] == "tax":
            # GET/POST /_sandbox/tax/{companyId}: the company's tax set-up;
            # POST {"areas": {code: [{"jurisdiction","name","rates":{group: %}}]},
            #       "groups": {group: % (VAT) or null}, "customers": {number: area}}
            with self.lock:
                company = self.company(parts[1])
                if method == "POST":
                    data = need_json()
                    if not isinstance(data, dict) or set(data) - {"areas", "groups", "customers"}:
                        raise ApiError(400, "BadRequest", "Send {areas, groups, customers}.")
                    try:
                        for code, juris in (data.get("areas") or {}).items():
                            company.tax["areas"][code] = [(j["jurisdiction"], j.get("name", j["jurisdiction"]),
                                                           {g: to_dec(r) for g, r in j["rates"].items()})
                                                          for j in juris]
                            company.tax_areas.setdefault(code, {
                                "@odata.etag": new_etag(), "id": did(company.id, "taxArea", code), "code": code,
                                "displayName": code, "taxType": company.tax["type"],
                                "lastModifiedDateTime": iso_ms()})
                        for g, r in (data.get("groups") or {}).items():
                            company.tax["groups"][g] = None if r is None else to_dec(r)
                    except (KeyError, TypeError, ValueError, AttributeError) as e:
                        raise ApiError(400, "BadRequest", "Bad tax set-up: %r" % (e,))
                    for number, area in (data.get("customers") or {}).items():
                        cu = company.customers.get(number)
                        if cu is None or area not in company.tax_areas:
                            raise ApiError(400, "BadRequest", "Unknown customer or tax area: %s %s" % (number, area))
                        cu["taxAreaId"], cu["taxAreaDisplayName"] = company.tax_areas[area]["id"], area
                    self.touch()
                return 200, plain(tax_view(company.tax))
        if parts == ["stats"] and method == "GET":
            return 200, {"principals": self.limiter.stats()}
        if parts == ["tokens", "revoke"] and method == "POST":
            with self.lock:
                n = len(self.tokens)
                self.tokens = {}
                self.touch()
            return 200, {"revoked": n}
        if parts == ["orders"] and method == "GET":
            out = []
            with self.lock:
                for c in self.companies.values():
                    for o in c.orders.values():
                        v = self.doc_view(o)
                        v["salesOrderLines"] = [line_view(l) for l in o["_lines"]]
                        out.append({"companyId": c.id, "companyName": c.name, "state": "open", "order": v,
                                    "invoice": None, "shipment": None})
                    for oid, p in c.posted.items():
                        v = self.doc_view(p["order"])
                        v["salesOrderLines"] = [line_view(l) for l in p["order"]["_lines"]]
                        inv = c.invoices.get(p["invoiceId"])
                        shp = c.shipments.get(p["shipmentId"])
                        out.append({"companyId": c.id, "companyName": c.name, "state": "posted", "order": v,
                                    "invoice": {"id": inv["id"], "number": inv["number"]} if inv else None,
                                    "shipment": {"id": shp["id"], "number": shp["number"]} if shp else None})
            return 200, {"value": out}
        if len(parts) == 5 and parts[0] == "companies" and parts[2] == "salesOrders" and method == "POST" \
                and parts[4] in ("post", "release", "reopen"):
            with self.lock:
                company = self.company(parts[1])
                order = company.orders.get(parts[3].lower())
                if order is None:
                    raise ApiError(404, "Internal_RecordNotFound", "The Sales Order Entity Buffer does not exist. "
                                   "Identification fields and values: Id='%s'" % parts[3])
                if parts[4] == "post":
                    inv, shp = self.post_order(company, order)
                    return 200, {"invoice": {"id": inv["id"], "number": inv["number"]},
                                 "shipment": {"id": shp["id"], "number": shp["number"]}}
                order["status"] = "Open" if parts[4] == "release" else "Draft"
                order["@odata.etag"] = new_etag()
                order["lastModifiedDateTime"] = iso_ms()
                self.touch()
                return 200, {"id": order["id"], "status": order["status"]}
        if parts == ["echo"]:
            if method == "POST":
                with self.lock:
                    plan = self.echo_plan
                    status = plan["statuses"].pop(0) if plan["statuses"] else 200
                    delay = plan.get("delay_ms", 0)
                    self.echo.append({"time": iso_ms(), "path": handler.path, "status": status,
                                      "headers": [[k, v] for k, v in handler.headers.items()],
                                      "body_b64": base64.b64encode(body).decode()})
                if delay:
                    time.sleep(delay / 1000.0)
                return status, {"received": True, "status": status}
            if method == "GET":
                with self.lock:
                    return 200, {"value": list(self.echo)}
            if method == "DELETE":
                with self.lock:
                    self.echo = []
                    self.echo_plan = {"statuses": [], "delay_ms": 0}
                return 200, {"ok": True}
        if parts == ["echo", "config"] and method == "POST":
            data = plain(need_json())
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "Send {\"statuses\":[...], \"delay_ms\":N}.")
            with self.lock:
                self.echo_plan = {"statuses": [int(s) for s in data.get("statuses", [])],
                                  "delay_ms": int(data.get("delay_ms", 0))}
            return 200, self.echo_plan
        raise ApiError(404, "BadRequest_ResourceNotFound", "No control endpoint %s %s." % (method, path))


BC_PATH = re.compile(r"^/v2\.0/([^/]+)/([^/]+)/api/v2\.0(/.*)?$")
TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BusinessCentralSandbox/1.0"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # replaced by our own one-line log
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise ApiError(400, "BadRequest", "Bad chunked encoding.")
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ApiError(413, "BadRequest", "Request body too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "Bad Content-Length.")
        if n > MAX_BODY:
            raise ApiError(413, "BadRequest", "Request body too large.")
        return self.rfile.read(n) if n > 0 else b""

    def respond(self, status, obj, headers, ctype="application/json; odata.metadata=minimal; "
                                                  "odata.streaming=true; IEEE754Compatible=false; charset=utf-8"):
        body = b"" if obj is None else json_dumps(obj)
        # logged before the answer leaves, so a client that has its answer finds it in the log
        self.log_call(status)
        self.send_response(status)
        if obj is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("OData-Version", "4.0")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_call(self, status):
        """The BC/Entra request log entry of this call, once."""
        call, self._call = getattr(self, "_call", None), None
        if call is None:
            return
        app, t0, method, path, query, params = call
        app.log_add({"time": iso_ms(), "method": method, "path": path, "query": query,
                     "params": {k: v[0] if len(v) == 1 else v for k, v in params.items()},
                     "status": status, "durationMs": int((time.monotonic() - t0) * 1000),
                     "client": self._principal, "fault": self._fault})

    def drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self, method):
        app = self.server.app
        t0 = time.monotonic()
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = split.query
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        status = 0
        self._principal = self._fault = None
        self._call = None
        self._t0 = t0
        shop = shopify.shop_from_host(self.headers.get("Host"))
        if shop is None and not path.startswith("/_sandbox/"):
            self._call = (app, t0, method, path, query, params)
        try:
            try:
                body = self.read_body()
            except ApiError as e:
                self.close_connection = True
                raise
            if path.startswith("/_sandbox/"):
                status, obj = app.control(method, path, params, body, self)
                self.respond(status, obj, [], ctype="application/json; charset=utf-8")
                return
            if shop is not None:
                status = shopify.dispatch(app, self, method, shop, path, split, params, body)
                return
            status = self.service(app, method, path, split, params, body)
        except Drop:
            status = 0
            self.drop()
        except ApiError as e:
            status = e.status
            try:
                self.respond(e.status, bc_error_body(e.code, e.message), e.headers)
            except OSError:
                pass
        except OSError:
            status = 0
            self.close_connection = True
        except Exception as e:  # a bug in the sandbox: answer 500, say so on stderr
            status = 500
            print("sandbox: internal error: %r" % (e,), file=sys.stderr)
            import traceback
            traceback.print_exc()
            try:
                self.respond(500, bc_error_body("Internal_ServerError", "Sandbox internal error."), [])
            except OSError:
                pass
        finally:
            principal = self._principal
            ms = int((time.monotonic() - t0) * 1000)
            self.log_call(status)  # a dropped call never answered
            if not app.args.quiet:
                print("sandbox: %s %s %s%s %s %dms%s" % (
                    iso_ms(), method, path, ("?" + query) if query else "", status or "dropped", ms,
                    (" client=" + principal) if principal else ""), file=sys.stderr, flush=True)

    def service(self, app, method, path, split, params, body):
        """Entra token endpoint and BC API.  Returns the status answered."""
        target = path + ("?" + split.query if split.query else "")
        rule = app.match_fault(method, target)
        self._fault = rule.kind if rule else None
        if rule is not None:
            if rule.kind == "status":
                raise app.fault_response(rule)
            if rule.kind == "drop":
                raise Drop()
        m = TOKEN_PATH.match(path)
        if m:
            if method != "POST":
                raise ApiError(405, "BadRequest_MethodNotAllowed", "The token endpoint accepts POST only.")
            if rule is not None and rule.kind == "latency":
                time.sleep(rule.latency_ms / 1000.0)
            status, obj = app.token(m.group(1), body, self.headers.get("Content-Type", ""))
            obj_status = status
            if rule is not None and rule.kind == "commit_then_fail" and status == 200:
                raise app.fault_response(rule)
            if rule is not None and rule.kind == "commit_then_drop" and status == 200:
                raise Drop()
            if rule is not None and rule.kind == "commit_then_hold" and status == 200:
                time.sleep(rule.hold_ms / 1000.0)
            self.respond(obj_status, obj, [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")],
                         ctype="application/json; charset=utf-8")
            return obj_status
        m = BC_PATH.match(path)
        if not m:
            raise ApiError(404, "BadRequest_ResourceNotFound", "No HTTP resource was found that matches the request "
                           "URI '%s'." % path)
        tenant, env, rest = m.group(1), m.group(2), m.group(3) or ""
        principal = self._principal = app.authenticate(self.headers)
        if tenant != app.tenant:
            raise ApiError(401, "Authentication_InvalidCredentials", "The server has rejected the client credentials.")
        app.limiter.acquire(principal)
        try:
            delay = app.cfg["latency_ms"] + (rule.latency_ms if rule is not None and rule.kind == "latency" else 0)
            if delay:
                time.sleep(delay / 1000.0)
            # BC cancels a request that has not finished within its execution
            # limit (10 minutes), queueing included: 504, nothing done
            if (time.monotonic() - self._t0) * 1000.0 > app.cfg["max_execution_ms"]:
                raise ApiError(504, "Internal_ServerError", FAULT_BODIES[504][1])
            data = None
            if method in ("POST", "PATCH", "PUT") and body.strip():
                try:
                    data = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_int=Decimal)
                except (ValueError, UnicodeDecodeError):
                    raise ApiError(400, "BadRequest", "Invalid Request Body")
            elif method in ("POST", "PATCH", "PUT"):
                data = {}
            host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
            ctx = "http://%s/v2.0/%s/%s/api/v2.0/" % (host, tenant, env)
            status, obj, hdrs = app.bc(method, rest, params, data, ctx, self.headers)
            if rule is not None and 200 <= status < 300:
                if rule.kind == "commit_then_fail":
                    raise app.fault_response(rule)
                if rule.kind == "commit_then_drop":
                    raise Drop()
                if rule.kind == "commit_then_hold":
                    time.sleep(rule.hold_ms / 1000.0)
            self.respond(status, obj, hdrs)
            return status
        finally:
            app.limiter.release(principal)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True


def cmd_serve(args):
    shopify_oauth.configure(args)
    app = Sandbox(args)
    srv = Server((args.host, args.port), Handler)
    srv.app = app
    port = srv.server_address[1]
    if args.https_port is not None:
        tls = shopify.TLSServer((args.host, args.https_port), Handler, args.tls_cert, args.tls_key, app)
        tls.app = app
        if args.https_port_file:
            with open(args.https_port_file + ".tmp", "w") as f:
                f.write("%d\n" % tls.server_address[1])
            os.replace(args.https_port_file + ".tmp", args.https_port_file)
        print("sandbox: listening on https://%s:%d" % (args.host, tls.server_address[1]),
              file=sys.stderr, flush=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("sandbox: listening on http://%s:%d tenant=%s companies=%s,%s" % (
        args.host, port, args.tenant, USD_COMPANY_ID, EUR_COMPANY_ID), file=sys.stderr, flush=True)

    stop = threading.Event()

    def flusher():
        while not stop.wait(0.2):
            try:
                app.save_state()
            except OSError as e:
                print("sandbox: cannot write state file: %s" % e, file=sys.stderr)

    if args.state_file:
        threading.Thread(target=flusher, daemon=True).start()

    def on_signal(signum, frame):
        stop.set()
        try:
            app.save_state()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    srv.serve_forever()


# ---------------------------------------------------------------------------
# Shopify side: webhook sender
# ---------------------------------------------------------------------------

SHOPIFY_DEFAULT_DELAYS = [10, 30, 60, 300, 900, 1800, 3600, 7200]  # ~3.9 h over 8 retries


def hmac_b64(secret, data):
    return base64.b64encode(hmac.new(secret.encode("utf-8"), data, hashlib.sha256).digest()).decode()


def cmd_sign(args):
    with open(args.file, "rb") as f:
        print(hmac_b64(args.secret, f.read()))
    return 0


def triggered_at_now():
    t = time.time_ns()
    secs, ns = divmod(t, 10 ** 9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%09dZ" % ns


def deliver_once(url, headers, body, insecure):
    """One HTTP attempt with Shopify's budget: 1 s to connect, 5 s in total."""
    u = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + 5.0
    port = u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    sock = socket.create_connection((u.hostname, port), timeout=1.0)
    try:
        if u.scheme == "https":
            ctx = ssl.create_default_context()
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        conn = http.client.HTTPConnection(u.hostname, port)
        conn.sock = sock
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", u.netloc)
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        resp = conn.getresponse()
        head = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("total time budget of 5 s exceeded")
            sock.settimeout(left)
            chunk = resp.read(65536)
            if not chunk:
                break
            if len(head) < 4096:
                head += chunk[:4096 - len(head)]
        return resp.status, answer_word(head)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def answer_word(body):
    """The receiver's one-word verdict, when it gives one as JSON
    ({"status": "duplicate"} from the intake), else ""."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:
        return ""
    if isinstance(doc, dict):
        word = doc.get("status") or doc.get("error")
        if isinstance(word, str) and len(word) <= 64:
            return word.replace(" ", "_")
    return ""


def cmd_send(args):
    meta = {}
    meta_path = args.meta or os.path.join(args.fixtures, "meta", "webhook-headers.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f).get("headers", {})
    delays = SHOPIFY_DEFAULT_DELAYS
    if args.retry_delays:
        try:
            delays = [float(x) for x in args.retry_delays.split(",") if x.strip()]
        except ValueError:
            print("send: --retry-delays wants numbers like 1,2,4", file=sys.stderr)
            return 2
    extra = []
    for h in args.header or []:
        k, sep, v = h.partition(":")
        if not sep or not k.strip():
            print("send: --header wants K:V, got %r" % h, file=sys.stderr)
            return 2
        extra.append((k.strip(), v.strip()))
    failed = 0
    for path in args.files:
        with open(path, "rb") as f:
            body = f.read()
        m = meta.get(os.path.basename(path), {})
        topic = args.topic or m.get("X-Shopify-Topic")
        if not topic:
            print("send: %s: no topic (not in webhook-headers.json); give --topic" % path, file=sys.stderr)
            return 2
        headers = collections.OrderedDict()
        headers["Content-Type"] = "application/json"
        headers["X-Shopify-Topic"] = topic
        headers["X-Shopify-Hmac-Sha256"] = hmac_b64(args.secret, body)
        headers["X-Shopify-Shop-Domain"] = args.shop or m.get("X-Shopify-Shop-Domain") or "acme-demo.myshopify.com"
        headers["X-Shopify-API-Version"] = args.api_version or m.get("X-Shopify-API-Version") or "2024-04"
        headers["X-Shopify-Webhook-Id"] = args.webhook_id or m.get("X-Shopify-Webhook-Id") or str(uuid.uuid4())
        headers["X-Shopify-Event-Id"] = args.event_id or m.get("X-Shopify-Event-Id") or str(uuid.uuid4())
        headers["X-Shopify-Triggered-At"] = m.get("X-Shopify-Triggered-At") or triggered_at_now()
        for k, v in extra:
            for existing in [e for e in headers if e.lower() == k.lower()]:
                del headers[existing]
            if v != "":
                headers[k] = v
        hlist = list(headers.items())
        for copy in range(1 + args.duplicates):
            attempts, final, word = 0, "none", ""
            ok = False
            while True:
                attempts += 1
                try:
                    st, word = deliver_once(args.url, hlist, body,
                                            args.insecure)
                    final = str(st)
                    ok = 200 <= st < 300
                except (OSError, http.client.HTTPException) as e:
                    final = "error:%s" % (e.__class__.__name__,)
                if ok or attempts > args.retries:
                    break
                delay = delays[min(attempts - 1, len(delays) - 1)] if delays else 0
                # Shopify's own schedule waits hours in all: say so now
                print("send: %s webhook_id=%s attempt %d: status=%s%s; "
                      "attempt %d in %g s" % (
                          os.path.basename(path),
                          headers.get("X-Shopify-Webhook-Id", "-"), attempts,
                          final, " answer=%s" % word if word else "",
                          attempts + 1, delay),
                      file=sys.stderr, flush=True)
                time.sleep(delay)
            print("%s webhook_id=%s status=%s%s attempts=%d%s" % (
                os.path.basename(path), headers.get("X-Shopify-Webhook-Id", "-"), final,
                " answer=%s" % word if word else "", attempts,
                " duplicate=%d" % copy if copy else ""), flush=True)
            if not ok:
                failed += 1
    return 1 if failed else 0


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="sandbox.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the BC API v2.0 + Entra sandbox")
    s.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port, see --port-file)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port-file", help="write the bound port to this file once listening")
    s.add_argument("--state-file", help="persist orders/posted documents/tokens as JSON here")
    s.add_argument("--fixtures", default=DEFAULT_FIXTURES, help="fixtures directory (bc/ is read)")
    s.add_argument("--tenant", default="sandbox-tenant")
    s.add_argument("--client-id", default="sandbox-client-id")
    s.add_argument("--client-secret", default="sandbox-client-secret")
    s.add_argument("--extra-client", action="append", metavar="ID:SECRET", help="another app registration")
    s.add_argument("--token-ttl", type=int, default=3599, help="access token lifetime in seconds")
    s.add_argument("--latency-ms", type=float, default=0, help="added to every BC API call")
    s.add_argument("--max-concurrent", type=int, default=5, help="requests processed at once per principal")
    s.add_argument("--max-queue", type=int, default=95, help="requests waiting per principal before 429")
    s.add_argument("--rate-limit", type=int, default=6000, help="requests per window per principal")
    s.add_argument("--rate-window-s", type=float, default=300, help="sliding window length in seconds")
    s.add_argument("--max-execution-ms", type=float, default=600000,
                   help="a BC call not done this long after it arrived is cancelled with 504 (BC: 10 minutes)")
    s.add_argument("--quiet", action="store_true", help="no per-request line on stderr")
    s.add_argument("--https-port", type=int, help="also serve HTTPS here (same endpoints; needs --tls-cert/-key)")
    s.add_argument("--tls-cert", help="PEM certificate (chain) for --https-port")
    s.add_argument("--tls-key", help="PEM private key for --https-port")
    s.add_argument("--https-port-file", help="write the bound HTTPS port here once listening")
    shopify_oauth.add_arguments(s)

    w = sub.add_parser("send", help="deliver Shopify webhooks (HMAC-signed) to URL")
    w.add_argument("--url", required=True)
    w.add_argument("--secret", required=True, help="app client secret used for X-Shopify-Hmac-Sha256")
    w.add_argument("--topic")
    w.add_argument("--shop")
    w.add_argument("--webhook-id")
    w.add_argument("--event-id")
    w.add_argument("--api-version")
    w.add_argument("--duplicates", type=int, default=0, help="send the same delivery N extra times")
    w.add_argument("--retries", type=int, default=8, help="retries after a non-2xx or connection error")
    w.add_argument("--retry-delays", help="seconds between attempts, e.g. 1,2,4 (last one repeats)")
    w.add_argument("--header", action="append", metavar="K:V", help="extra/override header; 'K:' removes K")
    w.add_argument("--meta", help="webhook-headers.json (default: fixtures/meta/webhook-headers.json)")
    w.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    w.add_argument("--insecure", action="store_true", help="https: do not verify the certificate")
    w.add_argument("files", nargs="+", metavar="FILE")

    g = sub.add_parser("sign", help="print base64 HMAC-SHA256 of FILE")
    g.add_argument("--secret", required=True)
    g.add_argument("file")

    args = ap.parse_args(argv)
    if args.cmd == "serve" and args.https_port is not None and not (args.tls_cert and args.tls_key):
        ap.error("--https-port needs --tls-cert and --tls-key")
    if args.cmd == "serve":
        return cmd_serve(args)
    if args.cmd == "send":
        return cmd_send(args)
    return cmd_sign(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
