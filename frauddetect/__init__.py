"""frauddetect: shared domain code of the real-time card-fraud detection system.

One package used by every entry point (Glue streaming job, Lambdas, SageMaker training, CLI, tests), so
the stream, training and tests cannot drift apart: event schemas, feature definitions, model I/O, scorer
clients, metrics, the transaction simulator and the embedded local stack.
"""

__version__ = "0.1.0"
