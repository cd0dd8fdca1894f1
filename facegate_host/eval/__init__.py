"""Accuracy evaluation protocols."""
