"""One module per tracker, each behind :class:`shared.tracking.base.Tracker`; imported only when asked for."""
