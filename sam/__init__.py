"""The Sam-style model packager (pack, verify, unpack, mount).

Filled by the Sam issue; this release ships no sam command yet.
"""
