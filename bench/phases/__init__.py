"""One module per measured phase; `bench.harness.Bench` is all of them on one stack."""
