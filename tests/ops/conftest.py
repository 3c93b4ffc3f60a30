"""The operator commands' tests (``callbridge status``, ``setup``, ``preflight``)."""
