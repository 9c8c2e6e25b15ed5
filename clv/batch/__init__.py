"""Work over a whole bank: scoring every customer, partition by partition, flat or on a Dask cluster, with the
same feature and model functions a single request goes through."""
