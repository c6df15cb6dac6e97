"""Fraud-alert Lambda: MSK ``fraud-alerts`` -> SNS; the handler is ``lambdas.alert_handler.app.handler``."""
