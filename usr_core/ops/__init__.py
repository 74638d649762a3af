"""One module per mutation of spec §4-§5: each is a function of a `Writer` that runs one `Transaction`."""
