"""The step classes the notebooks call: one public method per notebook cell."""
