"""Build the CDK app; shared by ``app.py`` (CLI and ``python app.py``) and the tests.

The CDK CLI passes ``cdk.json``'s ``context`` (and ``-c key=value``) through ``CDK_CONTEXT_JSON``; run
directly (``python app.py``, pytest) nothing does. So the ``cdk.json`` context is loaded here as the App's
default context: feature flags and the default environment then match ``cdk synth`` everywhere, and the
CLI's values (including ``-c env=prod``) still override them.

cdk-nag's ``AwsSolutionsChecks`` runs on the whole app; its findings are errors in the synthesized assembly
(``cdk synth`` prints them and fails; the tests fail on any). Every accepted finding is suppressed in
:mod:`infra.nag`, next to its reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects
from cdk_nag import AwsSolutionsChecks

from infra.config import EnvironmentConfig, aws_environment, get_config
from infra.stacks import REPO_ROOT, EnvironmentStacks, add_environment

CDK_JSON = REPO_ROOT / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` object of ``cdk.json`` (empty if the file or key is missing)."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("context", {}))


def build_app(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    config: EnvironmentConfig | None = None,
) -> App:
    """A CDK App with the ``FraudDetect-<env>-*`` stacks for ``env`` from context (default ``dev``).

    Args:
        context: extra context, overriding ``cdk.json`` (tests pass ``{"env": "prod"}``).
        outdir: cloud assembly directory. Default: the CLI's choice (``CDK_OUTDIR``), else ``cdk.out`` in
            the repository root (run directly, ``App`` would otherwise write to a temporary directory).
        config: settings to use instead of the context's environment (tests try variants with it).

    Raises:
        ValueError: a production environment without an alert threshold (:meth:`EnvironmentConfig.alert_threshold`),
            or an invalid ``-c alert_threshold``.
    """
    app, _ = build_app_with_stacks(context=context, outdir=outdir, config=config)
    return app


def build_app_with_stacks(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    config: EnvironmentConfig | None = None,
) -> tuple[App, EnvironmentStacks]:
    """:func:`build_app`, also returning the environment's stacks."""
    if outdir is None and not os.environ.get("CDK_OUTDIR"):
        outdir = str(REPO_ROOT / "cdk.out")
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    config = (config or get_config(app.node.try_get_context("env"))).with_context(app.node.try_get_context)
    stacks = add_environment(app, config=config, env=aws_environment())
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stacks
