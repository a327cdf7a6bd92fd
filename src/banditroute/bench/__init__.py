"""Benchmarks behind ``banditroute bench``; each module exposes a function returning a JSON-able dict."""
