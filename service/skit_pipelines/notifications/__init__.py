"""Durable notifications (issue 17): subscriptions, their deliveries and the sinks.

controller.py validates and stores subscriptions; worker.py turns the run change feed into
deliveries and sends them; sinks/ holds Slack and signed webhooks; secrets.py resolves
the secrets sinks name.
"""
