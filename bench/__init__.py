"""The benchmark harness of issue 8: one command (``python -m bench.run``) measures
the gateway against a fast fake upstream and a bare forwarder, in one run."""
