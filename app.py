#!/usr/bin/env python3
"""CDK entry point: ``cdk synth|deploy -c env=dev|prod`` (or ``python app.py`` to synthesize to cdk.out)."""

from infra.app import build_app

build_app().synth()
