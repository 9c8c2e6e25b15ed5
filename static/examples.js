// The example customers the form offers, as request bodies of POST /predict/clv. The first is the service's
// own example, read from its /openapi.json; the others are written here, dated in 2024.

const pad2 = (n) => String(n).padStart(2, "0");
/** One transaction a month in 2024 (months 1-12 unless given), amounts cycling through `amounts`. */
function monthly(day, type, amounts, channel, months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) {
  return months.map((m, i) => ({
    transaction_date: `2024-${pad2(m)}-${pad2(day)}`, transaction_type: type,
    amount: amounts[i % amounts.length], channel,
  }));
}
const byDate = (rows) => rows.sort((a, b) => a.transaction_date.localeCompare(b.transaction_date));
export const PROFILES = {
  readme: { name: "Original example", note: "The README request of the original system, unchanged.", data: null }, // null: the contract's example
  new: {
    name: "New customer",
    note: "Joined online twelve days before the as-of date; no product opened and no transaction yet.",
    data: {
      customer_id: 50931, age: 24, income: 31000, credit_score: 655, tenure_months: 0, region: "West",
      acquisition_channel: "Online", join_date: "2024-12-19", as_of: "2024-12-31", products: [], transactions: [],
    },
  },
  saver: {
    name: "Steady saver",
    note: "Eight years with the bank: salary every month, bills paid, savings and an investment account growing.",
    data: {
      customer_id: 20417, age: 52, income: 68000, credit_score: 782, tenure_months: 97, region: "South",
      acquisition_channel: "Branch", join_date: "2016-11-14", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2016-11-14", balance: 3240.55, status: "Active", interest_rate: 0.1 },
        { product_type: "Savings", start_date: "2017-02-01", balance: 28650, status: "Active", interest_rate: 3.25 },
        { product_type: "Investment", start_date: "2020-05-18", balance: 41200, status: "Active" },
      ],
      transactions: byDate([
        ...monthly(25, "Deposit", [4310], "Online"),
        ...monthly(5, "Bill Payment", [-182.4, -176.1, -169.85, -158.3, -149.9, -151.2, -163.75, -171.4, -160.05, -174.6, -188.2, -195.35], "Online"),
        ...monthly(26, "Transfer", [600], "Online"),
        ...monthly(12, "Withdrawal", [-200, -150, -250], "ATM", [2, 4, 6, 8, 10, 12]),
      ]),
    },
  },
  mortgage: {
    name: "Mortgage holder",
    note: "A family with a large mortgage, a credit card used every month, salary and savings with the bank.",
    data: {
      customer_id: 31088, age: 41, income: 118000, credit_score: 748, tenure_months: 61, region: "East",
      acquisition_channel: "Referral", join_date: "2019-11-08", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2019-11-08", balance: 6820.4, status: "Active", interest_rate: 0.1 },
        { product_type: "Mortgage", start_date: "2020-02-14", balance: 312450, status: "Active", interest_rate: 3.45 },
        { product_type: "Credit Card", start_date: "2020-06-01", balance: 1460.25, status: "Active", credit_limit: 12000, interest_rate: 21.9 },
        { product_type: "Savings", start_date: "2021-03-01", balance: 14300, status: "Active", interest_rate: 3.1 },
      ],
      transactions: byDate([
        ...monthly(28, "Deposit", [7150], "Online"),
        ...monthly(1, "Loan Payment", [-1742.18], "Online"),
        ...monthly(9, "Card Purchase", [-86.4, -142.9, -64.15, -210.3, -98.75, -121.6], "Mobile"),
        ...monthly(16, "Bill Payment", [-1310.55, -1288.9, -1402.3, -1356.1], "Online"),
      ]),
    },
  },
  drifting: {
    name: "Drifting away",
    note: "Salary stopped arriving in May, savings moved out in June, the card closed in August; only fees since.",
    data: {
      customer_id: 44562, age: 34, income: 52000, credit_score: 641, tenure_months: 45, region: "North",
      acquisition_channel: "Marketing", join_date: "2021-03-19", as_of: "2024-12-31",
      products: [
        { product_type: "Checking", start_date: "2021-03-19", balance: 312.8, status: "Active", interest_rate: 0.1 },
        { product_type: "Savings", start_date: "2021-06-01", balance: 150, status: "Inactive", interest_rate: 2.9 },
        { product_type: "Credit Card", start_date: "2022-01-10", end_date: "2024-08-30", balance: 0, status: "Closed", credit_limit: 4000, interest_rate: 23.4 },
      ],
      transactions: byDate([
        ...monthly(27, "Deposit", [3210], "Branch", [1, 2, 3, 4]),
        ...monthly(14, "Card Purchase", [-64.2, -118.45, -39.9, -87.3], "Online", [1, 2, 3, 4]),
        ...monthly(20, "Withdrawal", [-400, -650, -900, -1200], "ATM", [2, 4, 5, 6]),
        { transaction_date: "2024-06-14", transaction_type: "Transfer", amount: -2400, channel: "Online" },
        { transaction_date: "2024-08-30", transaction_type: "Bill Payment", amount: -212.6, channel: "Online" },
        ...monthly(2, "Fee", [-8], "Online", [7, 8, 9]),
      ]),
    },
  },
};
