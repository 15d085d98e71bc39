"""The event-driven pipeline: jobs, page work, events, and the services the handlers call."""
