"""A synthetic bank with a known truth: customers' hidden state stepped month by month (simulation), a block of
customers run over the months and the rows it collects (run), the four tables of the contract and their files
(tables), and a whole or partitioned bank generated block by block (generator). Knows no model."""
