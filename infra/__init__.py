"""AWS CDK infrastructure for frauddetect (``app.py`` is the entry point; see ``infra/stack.py``)."""
