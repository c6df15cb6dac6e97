"""A small stand-in for LocalStack's ``awslocal`` (the AWS CLI), over boto3, for running init hooks in tests.

``python awscli_shim.py SERVICE OPERATION [--param value ...] [--query JMESPATH] [--output text|json]``
calls ``OPERATION`` on the endpoint in ``AWSLOCAL_ENDPOINT_URL`` (a moto server) in ``AWS_DEFAULT_REGION``
and prints the answer the way the AWS CLI does. It covers the CLI syntax that init hooks here use:
parameters named as the CLI names them (``--queue-name`` for ``QueueName``, plus the CLI's renames such as
``--notification-endpoint``), JSON for structures, lists and maps, space-separated values for lists of
strings, flags for booleans. Anything else fails loudly (exit 252), never silently. Service errors exit 254
with the error on stderr, as the CLI does.
"""

from __future__ import annotations

import json
import os
import sys

import boto3
import jmespath
from botocore import xform_name
from botocore.exceptions import ClientError

SERVICES = {"s3api": "s3"}  # CLI command -> botocore service
RENAMES = {("sns", "notification-endpoint"): "Endpoint"}  # the CLI's own names for a few parameters


def _value(shape, tokens: list[str], i: int) -> tuple[object, int]:
    """Parse the value of a parameter of ``shape`` starting at ``tokens[i]``; returns (value, next index)."""
    kind = shape.type_name
    if kind == "boolean":
        return True, i
    if i >= len(tokens) or tokens[i].startswith("--"):
        raise SystemExit(f"awscli_shim: missing value for a {kind} parameter")
    if kind in ("structure", "map") or (kind == "list" and tokens[i].lstrip().startswith("[")):
        return json.loads(tokens[i]), i + 1
    if kind == "list":
        values = []
        while i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        return values, i
    if kind in ("integer", "long"):
        return int(tokens[i]), i + 1
    if kind == "string":
        return tokens[i], i + 1
    raise SystemExit(f"awscli_shim: parameters of type {kind} are not supported")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: awslocal SERVICE OPERATION [options]", file=sys.stderr)
        return 252
    command, operation_cli, tokens = argv[0], argv[1], argv[2:]
    service = SERVICES.get(command, command)
    client = boto3.client(service, endpoint_url=os.environ["AWSLOCAL_ENDPOINT_URL"],
                          region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    model = client.meta.service_model
    operations = {xform_name(name, "-"): name for name in model.operation_names}
    if operation_cli not in operations:
        print(f"awscli_shim: unknown operation {command} {operation_cli}", file=sys.stderr)
        return 252
    operation = model.operation_model(operations[operation_cli])
    members = operation.input_shape.members if operation.input_shape else {}
    by_cli_name = {xform_name(name, "-"): name for name in members}
    by_cli_name.update({cli: name for (svc, cli), name in RENAMES.items() if svc == service})
    params: dict[str, object] = {}
    query, output = None, "json"
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            print(f"awscli_shim: unexpected argument {token!r}", file=sys.stderr)
            return 252
        name = token[2:]
        if name in ("query", "output"):
            if name == "query":
                query = tokens[i + 1]
            else:
                output = tokens[i + 1]
            i += 2
            continue
        negated = name.startswith("no-") and name[3:] in by_cli_name
        member = by_cli_name.get(name[3:] if negated else name)
        if member is None:
            print(f"awscli_shim: unknown parameter {token} for {command} {operation_cli}", file=sys.stderr)
            return 252
        value, i = _value(members[member], tokens, i + 1)
        params[member] = (not value) if negated else value
    try:
        response = getattr(client, xform_name(operation.name))(**params)
    except ClientError as exc:
        print(f"An error occurred ({exc.response['Error']['Code']}): {exc}", file=sys.stderr)
        return 254
    response.pop("ResponseMetadata", None)
    result = jmespath.search(query, response) if query else response
    if output == "text":
        if isinstance(result, list):
            print("\t".join(str(v) for v in result))
        elif isinstance(result, dict):
            print("\t".join(str(v) for v in result.values()))
        elif result is not None or query:
            print("None" if result is None else result)
    elif result is not None:
        print(json.dumps(result, indent=4, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
