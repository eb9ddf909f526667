"""Test support: free ports, a private Redis, a scriptable fake upstream, a live gateway process."""
