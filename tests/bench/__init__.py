"""`make bench`: what a renewal costs a Wazo sandbox host (run tests.bench.renewal)."""
