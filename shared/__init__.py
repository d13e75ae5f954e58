"""Code every service imports: message models, settings, Redis streams, model loading, tasks, data."""
