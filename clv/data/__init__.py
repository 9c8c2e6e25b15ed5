"""The data contract and the bank it describes: the tables' schema and the request models (schema), reading and
checking files against it (contract), a bank held as arrays (bank), partitioned banks and their manifests
(layout), and a user's files checked and laid out as a partitioned bank (prepare). Knows no model."""
