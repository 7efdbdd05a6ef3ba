"""Reports: built from the audit log, rendered as JSON, Markdown and HTML, sealed by a manifest."""
