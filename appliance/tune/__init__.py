"""Threshold tuning: pure-numpy evidence and the installer's tools."""
