"""The streaming job (Spark Structured Streaming on AWS Glue 6.0, and locally), one module per stage.

- :mod:`~frauddetect.stream.source`, :mod:`~frauddetect.stream.source_options`: the local Kafka source (Glue
  uses Spark's own ``format("kafka")`` with the same columns and options);
- :mod:`~frauddetect.stream.parse`: validation and future-dated events (stateless);
- :mod:`~frauddetect.stream.card`: the card operator (late events, duplicates, card windows);
- :mod:`~frauddetect.stream.terminal`: the terminal operator (labels, terminal windows, sequence features);
- :mod:`~frauddetect.stream.keyed_state`: how both keep rows per card and terminal in Spark's state store;
- :mod:`~frauddetect.stream.score`: scoring;
- :mod:`~frauddetect.stream.lake`, :mod:`~frauddetect.stream.sinks`: the lake and the Kafka sinks, exactly once;
- :mod:`~frauddetect.stream.bootstrap`: initial state from the lake or a history file;
- :mod:`~frauddetect.stream.records`: the rows between the stages;
- :mod:`~frauddetect.stream.config`: the job's settings; :mod:`~frauddetect.stream.job`: the wiring.
"""
