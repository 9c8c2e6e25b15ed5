"""The tables' contract: their categories, columns and rows, which the files, the generator, the features and the
items of the API's request (products, transactions, ledger months) share."""

from __future__ import annotations

import datetime as dt
import numbers
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema


class Region(StrEnum):
    NORTH = "North"
    SOUTH = "South"
    EAST = "East"
    WEST = "West"


class AcquisitionChannel(StrEnum):
    ONLINE = "Online"
    BRANCH = "Branch"
    REFERRAL = "Referral"
    MARKETING = "Marketing"


class ProductType(StrEnum):
    SAVINGS = "Savings"
    CHECKING = "Checking"
    CREDIT_CARD = "Credit Card"
    MORTGAGE = "Mortgage"
    INVESTMENT = "Investment"
    PERSONAL_LOAN = "Personal Loan"


class ProductStatus(StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    SUSPENDED = "Suspended"
    CLOSED = "Closed"


class TransactionType(StrEnum):
    DEPOSIT = "Deposit"
    WITHDRAWAL = "Withdrawal"
    TRANSFER = "Transfer"
    BILL_PAYMENT = "Bill Payment"
    FEE = "Fee"
    CARD_PURCHASE = "Card Purchase"
    LOAN_PAYMENT = "Loan Payment"


class Channel(StrEnum):
    ONLINE = "Online"
    MOBILE = "Mobile"
    BRANCH = "Branch"
    ATM = "ATM"


# Balances in the ledger and the features are kept per product family.
PRODUCT_FAMILY: dict[ProductType, str] = {
    ProductType.SAVINGS: "deposits",
    ProductType.CHECKING: "deposits",
    ProductType.CREDIT_CARD: "cards",
    ProductType.MORTGAGE: "loans",
    ProductType.PERSONAL_LOAN: "loans",
    ProductType.INVESTMENT: "investments",
}
FAMILIES: tuple[str, ...] = ("deposits", "cards", "loans", "investments")

# The profit ledger (customer_metrics): one list of its value columns for the tables, the API and the features.
LEDGER_BALANCES: tuple[str, ...] = tuple(f"{family}_balance" for family in FAMILIES)
LEDGER_PARTS: tuple[str, ...] = ("interest_margin", "fee_income", "cost_to_serve", "credit_loss")
LEDGER_COLUMNS: tuple[str, ...] = ("net_margin", *LEDGER_BALANCES, *LEDGER_PARTS)

MAX_AMOUNT = 1e9


def codes(enum: type[StrEnum]) -> dict[str, int]:
    """Category value to its integer code: the enumeration's order, fixed by this file."""
    return {member.value: i for i, member in enumerate(enum)}


# ---- column contracts of the tables (CSV or Parquet) -------------------------------------------


DELTA, PLAIN = "DELTA_BINARY_PACKED", "PLAIN"  # Parquet's encodings a column may ask for (Column.encoding)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "int", "float", "str", "date", "month" or "category"
    required: bool = False
    enum: type[StrEnum] | None = None
    nullable: bool = False
    # how a Parquet file stores the column, when not by Parquet's default dictionary: DELTA for a key that grows row
    # by row, PLAIN for values too varied for a dictionary
    encoding: Literal["DELTA_BINARY_PACKED", "PLAIN"] | None = None


TABLES: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", "int", required=True, encoding=DELTA),
        Column("name", "str", nullable=True),
        Column("email", "str", nullable=True),
        Column("age", "float", nullable=True),
        Column("income", "float", nullable=True),
        Column("credit_score", "float", nullable=True),
        Column("region", "category", enum=Region, nullable=True),
        Column("acquisition_channel", "category", enum=AcquisitionChannel, nullable=True),
        Column("join_date", "date", nullable=True),
        Column("tenure_months", "float", nullable=True),
    ),
    "products": (
        Column("product_id", "int", required=True, encoding=DELTA),
        Column("customer_id", "int", required=True),
        Column("product_type", "category", required=True, enum=ProductType),
        Column("start_date", "date", required=True),
        Column("end_date", "date", nullable=True),
        Column("balance", "float", nullable=True),
        Column("credit_limit", "float", nullable=True),
        Column("interest_rate", "float", nullable=True),
        Column("status", "category", enum=ProductStatus, nullable=True),
    ),
    "transactions": (
        Column("transaction_id", "int", encoding=DELTA),
        Column("customer_id", "int", required=True),
        Column("product_id", "int", nullable=True),
        Column("transaction_date", "date", required=True),
        Column("transaction_type", "category", enum=TransactionType, nullable=True),
        Column("amount", "float", required=True, encoding=PLAIN),
        Column("channel", "category", enum=Channel, nullable=True),
    ),
    "customer_metrics": (
        Column("customer_id", "int", required=True),
        Column("month", "month", required=True),
        *(Column(name, "float", encoding=PLAIN) for name in LEDGER_BALANCES),
        *(Column(name, "float") for name in LEDGER_PARTS),
        Column("net_margin", "float", required=True),
    ),
}
REQUIRED_TABLES = ("transactions",)


# ---- pydantic models of a row: what the generator writes, and the items of the API's body ------------


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})?)?")


def _calendar_date(value: object) -> dt.date:
    """A date, or ISO text of a date or of a date and time (naive or with an offset): the calendar date
    written counts. Only text: pydantic's own parsing would also read a number, or digits, as a Unix time."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and ISO_DATE.fullmatch(value):
        try:
            return dt.datetime.fromisoformat(value.upper()).date()
        except ValueError as exc:
            raise ValueError(f"is not a valid date ({exc})") from None
    raise ValueError("must be an ISO date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM:SS, offset optional)")


# A date (YYYY-MM-DD) or a date and time, the offset optional: one of the two string formats, never both.
DATE_SCHEMA = {
    "oneOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
    "description": "An ISO date (YYYY-MM-DD) or date and time; the calendar date written counts.",
}
DateLike = Annotated[dt.date, PlainValidator(_calendar_date), WithJsonSchema(DATE_SCHEMA)]


def _a_number(value: object) -> object:
    """Only numbers: pydantic would also read true as 1, or a string of digits as its number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError("must be a number")
    return value


# A number is a JSON number: strict floats take ints and floats and refuse true and "12" (NaN and infinity
# are refused by the models' allow_inf_nan=False). A whole number also takes 1.0, as JSON Schema's integer.
WHOLE_ONLY = BeforeValidator(_a_number)  # after the bounds in an Annotated, so that the document shows them
Money = Annotated[float, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=True)]
PositiveMoney = Annotated[float, Field(ge=0, le=MAX_AMOUNT, strict=True)]
# a calendar month, YYYY-MM, from year 0001 (the first a date can hold)
MONTH_PATTERN = r"^(000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})-(0[1-9]|1[0-2])$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class ProductIn(StrictModel):
    """A product as a caller knows it today: its current balance and state."""

    product_type: ProductType
    start_date: DateLike
    balance: Money = 0.0
    status: ProductStatus = ProductStatus.ACTIVE
    end_date: DateLike | None = None
    credit_limit: PositiveMoney | None = None
    interest_rate: Annotated[float, Field(ge=-100, le=100, strict=True)] | None = None


class TransactionIn(StrictModel):
    transaction_date: DateLike
    amount: Money
    transaction_type: TransactionType | None = None
    channel: Channel | None = None


class LedgerMonthIn(StrictModel):
    """One month of the customer's profit ledger (customer_metrics.csv), when the caller has it."""

    month: Annotated[str, Field(pattern=MONTH_PATTERN, examples=["2024-12"])]
    net_margin: Money
    deposits_balance: PositiveMoney | None = None
    cards_balance: PositiveMoney | None = None
    loans_balance: PositiveMoney | None = None
    investments_balance: PositiveMoney | None = None
    interest_margin: Money | None = None
    fee_income: Money | None = None
    cost_to_serve: Money | None = None
    credit_loss: Money | None = None


class CustomerRecord(StrictModel):
    """A row of customers.csv."""

    customer_id: Annotated[int, Field(ge=1)]
    name: str
    email: str
    age: Annotated[int, Field(ge=18, le=120)]
    income: Annotated[float, Field(ge=0, le=MAX_AMOUNT)]
    credit_score: Annotated[int, Field(ge=300, le=850)]
    region: Region
    acquisition_channel: AcquisitionChannel
    join_date: dt.date
    tenure_months: Annotated[int, Field(ge=0)]


class ProductRecord(ProductIn):
    """A row of products.csv: balance and status are those at the data's end date."""

    product_id: Annotated[int, Field(ge=1)]
    customer_id: Annotated[int, Field(ge=1)]


class TransactionRecord(TransactionIn):
    transaction_id: Annotated[int, Field(ge=1)]
    customer_id: Annotated[int, Field(ge=1)]
    product_id: Annotated[int, Field(ge=1)]
    transaction_type: TransactionType
    channel: Channel


class LedgerRecord(StrictModel):
    """A row of customer_metrics.csv: one customer's profit in one calendar month."""

    customer_id: Annotated[int, Field(ge=1)]
    month: Annotated[str, Field(pattern=MONTH_PATTERN)]
    deposits_balance: PositiveMoney
    cards_balance: PositiveMoney
    loans_balance: PositiveMoney
    investments_balance: PositiveMoney
    interest_margin: Money
    fee_income: Money
    cost_to_serve: Money
    credit_loss: Money
    net_margin: Money
