"""Notifications: channels (console, file, apprise) and the notifier that records every delivery."""
