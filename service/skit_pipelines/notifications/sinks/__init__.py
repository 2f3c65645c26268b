"""Where notifications go: Slack (slack.py) and signed webhooks (webhook.py)."""
