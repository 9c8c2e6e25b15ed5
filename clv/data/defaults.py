"""What CLV means here unless told otherwise: the horizon, the churn label's months, the longer horizons, the
discount rate and the interval's level. The generator's oracle and the model share them; and the size of a part
of a bank, which the command line names in its help without loading the tables' code."""

# What CLV means by default: discounted net margin of the next 12 months at 10% a year, with an 80% interval.
HORIZON_MONTHS = 12
CHURN_MONTHS = 12  # churn probability: leaving within this many months of the as-of date
# the horizons a prediction carries beside the headline (docs/domain.md#lifetime): one, three and five years
HORIZONS: tuple[int, ...] = (12, 36, 60)
MAX_HORIZON = 120  # ten years: past it a constant monthly hazard says more about itself than about a customer
JUDGED_HORIZON = 24  # judged on realized outcomes too, where the data reaches, though not served by default
DISCOUNT_RATE = 0.10
INTERVAL_LEVEL = 0.8

PARTITION_CUSTOMERS = 25_000  # a part of this size is read, checked and scored in well under 1 GB
