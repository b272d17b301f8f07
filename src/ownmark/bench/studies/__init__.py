"""Studies: benches that measure what the scheme x attack grid does not (theft, speed, service, validity, the demo)."""
