"""Label feedback Lambda: analyst verdicts (API Gateway HTTP API) -> Kafka ``labels``; the handler is
``lambdas.label_feedback.app.handler``."""
