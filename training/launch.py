"""Train the fraud model on SageMaker and serve it from a TensorFlow Serving endpoint (sagemaker SDK V3).

    python -m training.launch --role ARN --bucket BUCKET --region eu-west-1 --deploy-start 2018-08-15 [--dry-run]

The SDK builds and sends every request:

1. ``CreateTrainingJob`` (``sagemaker.train.ModelTrainer``): the TensorFlow training image for the region
   and version (``sagemaker.core.image_uris``); as source, the ``frauddetect`` package with
   ``training/train.py`` and ``training/requirements.txt``, uploaded by the SDK under ``s3://BUCKET/``;
   ``training/train.py`` runs with the hyperparameters as ``--key value``, the ``train`` channel from
   ``s3://BUCKET/<train-prefix>/`` as ``SM_CHANNEL_TRAIN``, and ``SM_MODEL_DIR`` becomes the job's
   ``model.tar.gz`` under ``s3://BUCKET/<output-prefix>/``. Optional KMS key (output, volume, uploads) and
   VPC (subnets + security groups).
2. Once the job has completed (or for ``--model-data``), unless ``--no-deploy`` (where the CDK stack owns
   the endpoint, ``infra/model_endpoint.py``): ``CreateModel`` (the TensorFlow Serving image of the region,
   ``ModelDataUrl`` = the job's ``model.tar.gz``, network-isolated), ``CreateEndpointConfig`` (one variant;
   data capture of requests and answers to ``s3://BUCKET/<capture-prefix>/``), then ``CreateEndpoint``,
   or ``UpdateEndpoint`` when the endpoint exists -- the streaming job keeps calling the same name.

``--dry-run`` runs the same SDK code against moto (AWS mocked in-process: no network, no credentials) and
prints the requests the SDK sent, as JSON; botocore has validated each against the service model. Moto
implements no IAM policy simulation, so the SDK's role check is skipped there.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

log = logging.getLogger("frauddetect.launch")

TRAINING_DIR = Path(__file__).resolve().parent
ENTRY_SCRIPT = "training/train.py"
REQUIREMENTS = "training/requirements.txt"
#: Where ModelTrainer mounts the source in the training container; on PYTHONPATH so that
#: training/train.py imports the frauddetect package shipped beside it.
CODE_DIR_IN_CONTAINER = "/opt/ml/input/data/code"
VARIANT_NAME = "AllTraffic"
#: The requests this launcher makes, recorded for --dry-run and the summary.
RECORDED_OPERATIONS = ("CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint")
#: Telemetry off, and no SageMaker defaults files: the requests are what the flags say, on any machine.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class LaunchConfig:
    """What to train, where, and how to serve it.

    ``role_arn``: the SageMaker execution role (reads the bucket, writes the model, pulls the images).
    ``bucket``: the S3 bucket (name, no ``s3://``) for the training data (``train_prefix``), source
    uploads, the model (``output_prefix``) and captured requests (``capture_prefix``).
    ``deploy_start`` (first day the model will score) or ``train_start`` (first training day), YYYY-MM-DD,
    one of them to train: passed to ``training/train.py`` as ``--deploy-start`` / ``--train-start``;
    ``hyperparameters``: further ``training/train.py`` options without the dashes (``{"train-days": "7"}``).
    ``tf_version`` / ``serving_tf_version``: framework versions of the training and TF Serving images
    (``image_uris``); the newest of each in sagemaker 3.27 are 2.21 and 2.20.
    ``max_runtime_s``: the training job's limit, seconds. ``capture_percent``: share of requests captured.
    ``kms_key_id``: KMS key for the model output, training volume, source uploads, the endpoint's storage
    and captured data. ``subnets`` / ``security_group_ids``: a VPC for the training job and the model.
    ``model_data_url``: deploy this ``model.tar.gz`` instead of training.
    Raises ValueError on a malformed role ARN, bucket, date or percentage, or half a VPC.
    """

    role_arn: str
    bucket: str
    region: str
    deploy_start: str | None = None
    train_start: str | None = None
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    train_prefix: str = "training/transactions"
    output_prefix: str = "models"
    capture_prefix: str = "datacapture"
    instance_type: str = "ml.m5.xlarge"
    volume_size_gb: int = 30
    max_runtime_s: int = 3_600
    tf_version: str = "2.21"
    serving_tf_version: str = "2.20"
    serving_instance_type: str = "ml.m5.large"
    serving_instance_count: int = 1
    endpoint_name: str = "frauddetect"
    base_job_name: str = "frauddetect-train"
    capture_percent: int = 100
    kms_key_id: str | None = None
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    model_data_url: str | None = None

    def __post_init__(self) -> None:
        if not _ROLE_ARN.match(self.role_arn):
            raise ValueError(f"not an IAM role ARN: {self.role_arn!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ValueError(f"not an S3 bucket name (give the name, without s3://): {self.bucket!r}")
        if self.model_data_url is None:
            if (self.deploy_start is None) == (self.train_start is None):
                raise ValueError("to train, give one of deploy_start and train_start (or model_data_url to deploy)")
            date.fromisoformat(self.deploy_start or self.train_start)  # ValueError if not YYYY-MM-DD
        elif not self.model_data_url.startswith("s3://"):
            raise ValueError(f"model_data_url must be an s3:// URL, got {self.model_data_url!r}")
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("a VPC needs both subnets and security group ids")
        if not 0 <= self.capture_percent <= 100:
            raise ValueError(f"capture_percent must be in [0, 100], got {self.capture_percent}")
        if {"deploy-start", "train-start"} & set(self.hyperparameters):
            raise ValueError("give deploy_start/train_start, not a 'deploy-start'/'train-start' hyperparameter")

    def window(self) -> dict[str, str]:
        """The training window as ``training/train.py`` hyperparameters: ``{"deploy-start": day}`` or
        ``{"train-start": day}``."""
        return {"deploy-start": self.deploy_start} if self.deploy_start else {"train-start": self.train_start}

    def s3(self, prefix: str) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


def training_image_uri(cfg: LaunchConfig) -> str:
    """The AWS Deep Learning Container for TensorFlow training, for the region, version and instance type
    (CPU or GPU build), e.g. ``763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.21-cpu-py312``.
    Raises ValueError for a version or region the SDK does not know."""
    from sagemaker.core import image_uris

    return image_uris.retrieve("tensorflow", cfg.region, version=cfg.tf_version, instance_type=cfg.instance_type,
                               image_scope="training")


def serving_image_uri(cfg: LaunchConfig) -> str:
    """The SageMaker TensorFlow Serving container for the region, version and instance type, e.g.
    ``763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312``. Raises ValueError
    for a version or region the SDK does not know."""
    from sagemaker.core import image_uris

    return image_uris.retrieve("tensorflow", cfg.region, version=cfg.serving_tf_version,
                               instance_type=cfg.serving_instance_type, image_scope="inference")


def stage_source(dest: str | Path) -> Path:
    """Copy what the training container runs into ``dest`` (created): ``frauddetect/`` (the installed
    package, without caches), ``training/train.py`` and ``training/requirements.txt``. Only these: the
    upload must not carry the repository's other folders (virtualenv, runs, infra). Returns ``dest``."""
    import frauddetect

    dest = Path(dest)
    package = Path(frauddetect.__file__).resolve().parent
    shutil.copytree(package, dest / "frauddetect", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "training").mkdir(parents=True, exist_ok=True)
    for name in (ENTRY_SCRIPT, REQUIREMENTS):
        shutil.copy2(TRAINING_DIR / Path(name).name, dest / name)
    return dest


class RequestLog:
    """Records what a boto3 session sends: the parameters of the SageMaker calls in
    :data:`RECORDED_OPERATIONS` (as botocore is about to serialise them) and the S3 keys uploaded.

    A client copies its session's event handlers when it is made, and the SDK caches its clients per
    session, so a log sees only clients made after it: :meth:`of` attaches one log per session, first.
    """

    _by_session: ClassVar[weakref.WeakKeyDictionary[Any, RequestLog]] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, boto_session: Any) -> RequestLog:
        """The session's log, attached on first use."""
        if boto_session not in cls._by_session:
            cls._by_session[boto_session] = cls(boto_session)
        return cls._by_session[boto_session]

    def __init__(self, boto_session: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        boto_session.events.register("before-parameter-build.sagemaker", self._sagemaker)
        for op in ("PutObject", "CreateMultipartUpload"):
            boto_session.events.register(f"before-parameter-build.s3.{op}", self._upload)

    def _sagemaker(self, params: dict, model: Any, **_: Any) -> None:
        if model.name in RECORDED_OPERATIONS:
            self.requests.append({"operation": model.name, "params": copy.deepcopy(params)})

    def _upload(self, params: dict, **_: Any) -> None:
        self.uploads.append({"uri": f"s3://{params['Bucket']}/{params['Key']}", "kms_key": params.get("SSEKMSKeyId")})

    def uploads_by_channel(self, since: int = 0) -> dict[str, dict[str, Any]]:
        """For each channel of the last recorded CreateTrainingJob: its S3 URI -> number of objects
        uploaded there (from upload number ``since`` on) and the KMS keys they were encrypted with (the
        SDK uploads the source and its drivers)."""
        channels = self.params("CreateTrainingJob")["InputDataConfig"]
        out = {}
        for channel in channels:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"].rstrip("/") + "/"
            mine = [u for u in self.uploads[since:] if u["uri"].startswith(uri)]
            if mine:
                out[uri] = {"objects": len(mine), "kms_keys": sorted({u["kms_key"] for u in mine if u["kms_key"]})}
        return out

    def params(self, operation: str) -> dict[str, Any]:
        """Parameters of the last recorded ``operation``. Raises KeyError if it was not sent."""
        for request in reversed(self.requests):
            if request["operation"] == operation:
                return request["params"]
        raise KeyError(f"no {operation} request was sent")


def sagemaker_session(cfg: LaunchConfig, boto_session: Any) -> Any:
    """A ``sagemaker.core`` Session on ``boto_session`` with ``cfg.bucket`` as its default bucket (source
    uploads go there) and :data:`SDK_CONFIG`."""
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto_session, default_bucket=cfg.bucket, sagemaker_config=SDK_CONFIG)


def train(cfg: LaunchConfig, boto_session: Any, *, wait: bool = True, logs: bool = False) -> tuple[str, str | None]:
    """Submit the training job (see the module docstring); with ``wait``, block until it ends.

    Returns (training job name, ``s3://.../model.tar.gz`` once completed, else None). Raises RuntimeError
    when the job ends in any status but Completed, and the SDK's errors (botocore ClientError,
    ``RoleValidationError``) as they come.
    """
    from sagemaker.core.training.configs import (
        Compute,
        InputData,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train.model_trainer import ModelTrainer

    with tempfile.TemporaryDirectory(prefix="frauddetect-source-") as tmp:
        source = stage_source(Path(tmp) / "source")
        trainer = ModelTrainer(
            sagemaker_session=sagemaker_session(cfg, boto_session),
            role=cfg.role_arn,
            base_job_name=cfg.base_job_name,
            training_image=training_image_uri(cfg),
            source_code=SourceCode(source_dir=str(source), entry_script=ENTRY_SCRIPT, requirements=REQUIREMENTS),
            compute=Compute(instance_type=cfg.instance_type, instance_count=1, volume_size_in_gb=cfg.volume_size_gb,
                            volume_kms_key_id=cfg.kms_key_id),
            networking=(Networking(subnets=list(cfg.subnets), security_group_ids=list(cfg.security_group_ids))
                        if cfg.subnets else None),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=cfg.max_runtime_s),
            output_data_config=OutputDataConfig(s3_output_path=cfg.s3(cfg.output_prefix), kms_key_id=cfg.kms_key_id),
            hyperparameters={**cfg.window(), **cfg.hyperparameters},
            environment={"PYTHONPATH": CODE_DIR_IN_CONTAINER},
        )
        train_channel = InputData(channel_name="train", data_source=cfg.s3(cfg.train_prefix) + "/")
        trainer.train(input_data_config=[train_channel], wait=wait, logs=logs)
    # The SDK's own docstring example reads the job this way; train() returns nothing.
    job = trainer._latest_training_job
    if not wait:
        return job.training_job_name, None
    job.refresh()
    if job.training_job_status != "Completed":
        raise RuntimeError(f"training job {job.training_job_name} ended {job.training_job_status}: "
                           f"{getattr(job, 'failure_reason', '')}")
    return job.training_job_name, job.model_artifacts.s3_model_artifacts


def deploy(cfg: LaunchConfig, boto_session: Any, model_data_url: str, name: str, *, wait: bool = True) -> str:
    """Create the model and endpoint config ``name`` for ``model_data_url``, then create the endpoint
    ``cfg.endpoint_name`` or switch it to the new config. With ``wait``, block until it is InService.
    Returns the endpoint name. Raises the SDK's errors (botocore ClientError) as they come."""
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import (
        CaptureContentTypeHeader,
        CaptureOption,
        ContainerDefinition,
        DataCaptureConfig,
        ProductionVariant,
        VpcConfig,
    )

    where = {"session": boto_session, "region": cfg.region}
    vpc = VpcConfig(subnets=list(cfg.subnets), security_group_ids=list(cfg.security_group_ids)) if cfg.subnets else None
    model = Model.create(
        model_name=name,
        primary_container=ContainerDefinition(image=serving_image_uri(cfg), model_data_url=model_data_url),
        execution_role_arn=cfg.role_arn,
        vpc_config=vpc,
        # TF Serving needs nothing but its model, which SageMaker itself fetches.
        enable_network_isolation=True,
        **where,
    )
    config = EndpointConfig.create(
        endpoint_config_name=name,
        production_variants=[ProductionVariant(
            variant_name=VARIANT_NAME, model_name=model.model_name, instance_type=cfg.serving_instance_type,
            initial_instance_count=cfg.serving_instance_count, initial_variant_weight=1.0,
        )],
        data_capture_config=DataCaptureConfig(
            enable_capture=True,
            initial_sampling_percentage=cfg.capture_percent,
            destination_s3_uri=cfg.s3(cfg.capture_prefix),
            kms_key_id=cfg.kms_key_id,
            capture_options=[CaptureOption(capture_mode="Input"), CaptureOption(capture_mode="Output")],
            # Stored as JSON text rather than base64, so the captured rows can be queried.
            capture_content_type_header=CaptureContentTypeHeader(json_content_types=["application/json"]),
        ),
        kms_key_id=cfg.kms_key_id,
        **where,
    )
    try:
        endpoint = Endpoint.get(endpoint_name=cfg.endpoint_name, **where)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ValidationException":  # SageMaker's "Could not find endpoint"
            raise
        endpoint = Endpoint.create(endpoint_name=cfg.endpoint_name,
                                   endpoint_config_name=config.endpoint_config_name, **where)
    else:
        endpoint.endpoint_config_name = config.endpoint_config_name
        endpoint.update()
    if wait:
        endpoint.wait_for_status("InService")
    return cfg.endpoint_name


def launch(cfg: LaunchConfig, boto_session: Any, *, wait: bool = True, logs: bool = False,
           deploy_model: bool = True) -> dict[str, Any]:
    """Train (unless ``cfg.model_data_url``) and deploy (if ``deploy_model``; e.g. not where the endpoint
    is the CDK stack's, ``infra/model_endpoint.py``); returns the summary :func:`main` prints:
    ``training_job_name``, ``model_data_url``, ``endpoint_name`` (None when not deployed: without ``wait``
    the model does not exist yet), ``training_image``, ``serving_image``, ``uploads`` (objects the SDK
    uploaded per channel) and ``requests`` (operation and parameters of every request in
    :data:`RECORDED_OPERATIONS`, in order)."""
    recorded = RequestLog.of(boto_session)
    first_request, first_upload = len(recorded.requests), len(recorded.uploads)
    job_name, model_data = None, cfg.model_data_url
    if model_data is None:
        job_name, model_data = train(cfg, boto_session, wait=wait, logs=logs)
    endpoint = None
    if model_data is not None and deploy_model:
        name = job_name or f"{cfg.endpoint_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        endpoint = deploy(cfg, boto_session, model_data, name, wait=wait)
    return {
        "training_job_name": job_name,
        "model_data_url": model_data,
        "endpoint_name": endpoint,
        "training_image": training_image_uri(cfg) if job_name else None,
        "serving_image": serving_image_uri(cfg) if endpoint else None,
        "uploads": recorded.uploads_by_channel(first_upload) if job_name else {},
        "requests": recorded.requests[first_request:],
    }


def _answer_as_sagemaker_does(parsed: dict, model: Any, **_: Any) -> None:
    """Where moto's Describe* answers differ from SageMaker's in ways the SDK's resource models reject:
    moto echoes the endpoint config's DataCaptureConfig in DescribeEndpoint, where SageMaker answers a
    summary with CaptureStatus and CurrentSamplingPercentage; and DescribeModel carries an empty
    VpcConfig for a model without a VPC, where SageMaker leaves it out."""
    if model.name == "DescribeEndpoint" and isinstance(parsed.get("DataCaptureConfig"), dict):
        capture = parsed["DataCaptureConfig"]
        capture.setdefault("CaptureStatus", "Started" if capture.get("EnableCapture") else "Stopped")
        capture.setdefault("CurrentSamplingPercentage", capture.get("InitialSamplingPercentage", 0))
    if model.name == "DescribeModel" and parsed.get("VpcConfig") == {}:
        del parsed["VpcConfig"]


@contextmanager
def offline_aws(region: str) -> Iterator[Any]:
    """A boto3 session on moto's in-process AWS (nothing leaves the process), with throwaway credentials
    and the SDK's role check off (moto has no policy simulation). Yields the session."""
    import boto3
    from moto import mock_aws

    env = {"AWS_ACCESS_KEY_ID": "dry-run", "AWS_SECRET_ACCESS_KEY": "dry-run", "AWS_DEFAULT_REGION": region,
           "SAGEMAKER_VALIDATE_ROLE": "false"}
    with mock.patch.dict(os.environ, env), mock_aws():
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER"):
            os.environ.pop(name, None)
        session = boto3.Session(region_name=region)
        session.events.register("after-call.sagemaker", _answer_as_sagemaker_does)
        yield session


def dry_run(cfg: LaunchConfig, *, deploy_model: bool = True) -> dict[str, Any]:
    """:func:`launch` against :func:`offline_aws`: the requests the SDK would send to AWS, sent to moto."""
    with offline_aws(cfg.region) as session:
        return launch(cfg, session, wait=True, logs=False, deploy_model=deploy_model)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.removeprefix("--"), value


def build_parser() -> argparse.ArgumentParser:
    """The launcher's command line (see the module docstring)."""
    d = LaunchConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="python -m training.launch",
                                description="Train the fraud model on SageMaker and deploy it to an endpoint")
    p.add_argument("--role", required=True, help="SageMaker execution role ARN")
    p.add_argument("--bucket", required=True, help="S3 bucket name for data, source, model and captured requests")
    p.add_argument("--region", required=True)
    p.add_argument("--deploy-start", help="first day the model will score (YYYY-MM-DD); this or --train-start")
    p.add_argument("--train-start", help="first training day (YYYY-MM-DD)")
    p.add_argument("--hyperparameter", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="another training/train.py option, e.g. train-days=7 (repeatable)")
    p.add_argument("--train-prefix", default=d["train_prefix"].default, help="key prefix of the training data")
    p.add_argument("--output-prefix", default=d["output_prefix"].default, help="key prefix of the model output")
    p.add_argument("--capture-prefix", default=d["capture_prefix"].default, help="key prefix of captured requests")
    p.add_argument("--instance-type", default=d["instance_type"].default, help="training instance type")
    p.add_argument("--max-runtime-s", type=int, default=d["max_runtime_s"].default)
    p.add_argument("--tf-version", default=d["tf_version"].default, help="TensorFlow training image version")
    p.add_argument("--serving-tf-version", default=d["serving_tf_version"].default,
                   help="TensorFlow Serving image version")
    p.add_argument("--serving-instance-type", default=d["serving_instance_type"].default)
    p.add_argument("--serving-instance-count", type=int, default=d["serving_instance_count"].default)
    p.add_argument("--endpoint-name", default=d["endpoint_name"].default)
    p.add_argument("--capture-percent", type=int, default=d["capture_percent"].default)
    p.add_argument("--kms-key-id", help="KMS key for model output, volumes, uploads and captured data")
    p.add_argument("--subnet", action="append", default=[], help="VPC subnet id (repeatable; with --security-group)")
    p.add_argument("--security-group", action="append", default=[], help="VPC security group id (repeatable)")
    p.add_argument("--model-data", help="deploy this s3://.../model.tar.gz instead of training")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="submit the training job and return (nothing is deployed)")
    p.add_argument("--no-deploy", dest="deploy", action="store_false",
                   help="train and wait, but create no model or endpoint (e.g. the CDK stack deploys it)")
    p.add_argument("--logs", action="store_true", help="stream the training job's logs while waiting")
    p.add_argument("--dry-run", action="store_true",
                   help="send everything to an in-process AWS mock (moto) and print the requests as JSON")
    return p


def config_from_args(args: argparse.Namespace) -> LaunchConfig:
    """:class:`LaunchConfig` from parsed :func:`build_parser` arguments. Raises ValueError on bad values."""
    return LaunchConfig(
        role_arn=args.role, bucket=args.bucket, region=args.region, deploy_start=args.deploy_start,
        train_start=args.train_start,
        hyperparameters=dict(args.hyperparameter), train_prefix=args.train_prefix, output_prefix=args.output_prefix,
        capture_prefix=args.capture_prefix, instance_type=args.instance_type, max_runtime_s=args.max_runtime_s,
        tf_version=args.tf_version, serving_tf_version=args.serving_tf_version,
        serving_instance_type=args.serving_instance_type, serving_instance_count=args.serving_instance_count,
        endpoint_name=args.endpoint_name, capture_percent=args.capture_percent, kms_key_id=args.kms_key_id,
        subnets=tuple(args.subnet), security_group_ids=tuple(args.security_group), model_data_url=args.model_data,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, launch (or dry-run) and print the summary of :func:`launch` as JSON on stdout.
    Exit status 2 on bad options."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        summary = dry_run(cfg, deploy_model=args.deploy)
    else:
        import boto3

        summary = launch(cfg, boto3.Session(region_name=cfg.region), wait=args.wait, logs=args.logs,
                         deploy_model=args.deploy)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
