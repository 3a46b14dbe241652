"""Executing notebooks: papermill runs with bounds and records, and the respond chain."""
