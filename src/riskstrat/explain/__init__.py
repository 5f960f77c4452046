"""Exact TreeSHAP and the reasons in words built from it."""
