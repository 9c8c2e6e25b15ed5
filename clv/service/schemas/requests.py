"""What a caller sends: one customer, or a batch of them. A customer's products, transactions and ledger months are
the tables' own row models (clv.data.schema), so a generated row validates against what the API accepts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clv.data.schema import (
    MAX_AMOUNT,
    WHOLE_ONLY,
    AcquisitionChannel,
    DateLike,
    LedgerMonthIn,
    ProductIn,
    Region,
    StrictModel,
    TransactionIn,
)

MAX_PRODUCTS = 50
MAX_TRANSACTIONS = 10_000
MAX_BATCH = 1_000
MAX_LEDGER_MONTHS = 120
MAX_ID = 2**53 - 1  # the largest integer a JSON client (JavaScript's number) holds exactly

# The original system's README request: it must keep working unchanged (tests, benchmarks, /docs).
EXAMPLE = {
    "customer_id": 1,
    "age": 35,
    "income": 75000,
    "credit_score": 720,
    "tenure_months": 24,
    "region": "North",
    "acquisition_channel": "Online",
    "products": [{"product_type": "Savings", "start_date": "2023-01-01T00:00:00", "balance": 5000, "status": "Active"}],
    "transactions": [
        {"transaction_date": "2024-01-01T10:00:00", "transaction_type": "Deposit", "amount": 1000, "channel": "Online"}
    ],
}


class CustomerIn(StrictModel, BaseModel):  # BaseModel named too: linters know a pydantic default is copied
    """One customer to score: the original system's request body, plus optional as_of, join_date and ledger."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    customer_id: Annotated[int, Field(ge=0, le=MAX_ID), WHOLE_ONLY]
    age: Annotated[float, Field(ge=18, le=120, strict=True)]
    income: Annotated[float, Field(ge=0, le=MAX_AMOUNT, strict=True)]
    credit_score: Annotated[float, Field(ge=300, le=850, strict=True)]
    tenure_months: Annotated[float, Field(ge=0, le=1200, strict=True)]
    region: Region
    acquisition_channel: AcquisitionChannel
    # null is accepted, and documented, as no items
    products: Annotated[list[ProductIn], Field(max_length=MAX_PRODUCTS)] | None = []
    transactions: Annotated[list[TransactionIn], Field(max_length=MAX_TRANSACTIONS)] | None = []
    ledger: Annotated[list[LedgerMonthIn], Field(max_length=MAX_LEDGER_MONTHS)] | None = []
    join_date: DateLike | None = Field(default=None, description="When known, tenure is counted from it.")
    as_of: DateLike | None = Field(
        default=None, description="Date to score as of; default: the last date of the model's data."
    )

    @field_validator("products", "transactions", "ledger")
    @classmethod
    def _null_is_empty(cls, value: list | None) -> list:
        return [] if value is None else value


class BatchIn(StrictModel):
    customers: Annotated[list[CustomerIn], Field(min_length=1, max_length=MAX_BATCH)]
