"""The SageMaker launcher: the requests the sagemaker SDK sends for training and deployment.

Nothing reaches AWS: the SDK runs against moto in-process (``training.launch.offline_aws``) and the
requests are recorded as botocore is about to send them (after botocore validated them against the
service model). The source the SDK uploaded is read back from moto's S3 and run as the container runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.launch import (
    LaunchConfig,
    RequestLog,
    launch,
    main,
    offline_aws,
    serving_image_uri,
    training_image_uri,
)

pytestmark = [
    pytest.mark.unit,
    # raised by the SDK's own modules when they are imported, not by this code
    pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:sagemaker.train.configs has been moved:DeprecationWarning"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::111122223333:role/fraud-sagemaker"
KMS = "arn:aws:kms:eu-west-1:111122223333:key/0a1b2c3d"
FULL = LaunchConfig(
    role_arn=ROLE, bucket="fraud-ml-dev", region="eu-west-1", deploy_start="2018-08-15",
    hyperparameters={"train-days": "7", "alerts-per-day": "100"}, instance_type="ml.m5.2xlarge",
    serving_instance_type="ml.c5.xlarge", serving_instance_count=2, endpoint_name="fraud-dev",
    capture_percent=20, kms_key_id=KMS, subnets=("subnet-0a",), security_group_ids=("sg-0b",),
)  # fmt: skip


@pytest.fixture(scope="module")
def full_launch(tmp_path_factory):
    """The FULL config launched against moto: (summary, the code channel downloaded, sm_drivers downloaded)."""
    with offline_aws(FULL.region) as session:
        summary = launch(FULL, session)
        s3 = session.client("s3")
        downloaded = {}
        for uri in summary["uploads"]:
            bucket, _, prefix = uri.removeprefix("s3://").partition("/")
            root = tmp_path_factory.mktemp(prefix.rstrip("/").rsplit("/", 1)[-1])
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
                target = root / obj["Key"].removeprefix(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
            downloaded[root.name.rstrip("0123456789")] = root
    return summary, downloaded["code"], downloaded["sm_drivers"]


def _request(summary: dict, operation: str) -> dict:
    (params,) = [r["params"] for r in summary["requests"] if r["operation"] == operation]
    return params


def test_training_job_request(full_launch):
    summary, _, _ = full_launch
    job = _request(summary, "CreateTrainingJob")
    name = job["TrainingJobName"]
    assert name.startswith("frauddetect-train-") and name == summary["training_job_name"]
    algorithm = job["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.21-cpu-py312"
    assert algorithm["TrainingInputMode"] == "File"
    assert job["HyperParameters"] == {"deploy-start": "2018-08-15", "train-days": "7", "alerts-per-day": "100"}
    assert job["RoleArn"] == ROLE
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "train": "s3://fraud-ml-dev/training/transactions/",
        "code": f"s3://fraud-ml-dev/frauddetect-train/{name}/input/code",
        "sm_drivers": f"s3://fraud-ml-dev/frauddetect-train/{name}/input/sm_drivers",
    }
    assert job["OutputDataConfig"] == {"S3OutputPath": "s3://fraud-ml-dev/models", "KmsKeyId": KMS,
                                       "CompressionType": "GZIP"}
    assert job["ResourceConfig"] == {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30,
                                     "VolumeKmsKeyId": KMS}
    assert job["VpcConfig"] == {"Subnets": ["subnet-0a"], "SecurityGroupIds": ["sg-0b"]}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert job["Environment"] == {"PYTHONPATH": "/opt/ml/input/data/code"}
    # The SDK's uploads of the source are encrypted with the same key.
    assert all(u["kms_keys"] == [KMS] for u in summary["uploads"].values())
    assert summary["model_data_url"] == f"s3://fraud-ml-dev/models/{name}/output/model.tar.gz"


def test_the_uploaded_source_is_the_package_and_the_entry_point_only(full_launch):
    _, code, drivers = full_launch
    files = {p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()}
    assert {"training/train.py", "training/requirements.txt", "frauddetect/model.py", "frauddetect/training.py"} <= files
    assert all(f.startswith(("frauddetect/", "training/")) for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert (code / "training/train.py").read_bytes() == (REPO_ROOT / "training/train.py").read_bytes()
    # What the container runs: sourcecode.json names the entry script; sm_train.sh installs the
    # requirements and runs it from the code channel.
    source = json.loads((drivers / "sourcecode.json").read_text())
    assert (source["entry_script"], source["requirements"]) == ("training/train.py", "training/requirements.txt")
    script = (drivers / "sm_train.sh").read_text()
    assert "cd /opt/ml/input/data/code" in script and "install_requirements.py training/requirements.txt" in script


def test_the_entry_point_takes_the_hyperparameters_and_imports_the_uploaded_package(full_launch, tmp_path):
    summary, code, _ = full_launch
    hyper = _request(summary, "CreateTrainingJob")["HyperParameters"]
    args = [a for k, v in hyper.items() for a in (f"--{k}", v)]  # what the SDK's script driver passes
    (tmp_path / "train").mkdir()
    # As in the container: `python training/train.py ...` from the code channel, PYTHONPATH on it.
    run_as_script = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]; sys.path[0] = 'training'\n"
        "try:\n    runpy.run_path('training/train.py', run_name='__main__')\n"
        "finally:\n    import frauddetect; print('frauddetect from', frauddetect.__file__, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code), "SM_CHANNEL_TRAIN": str(tmp_path / "train"),
           "SM_MODEL_DIR": str(tmp_path / "model")}
    proc = subprocess.run([sys.executable, "-c", run_as_script, "training/train.py", *args], cwd=code, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    # Options parsed, package imported from the upload; it stops at the empty channel (no data here).
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"no .parquet or .csv file in {tmp_path / 'train'}" in proc.stderr
    assert f"frauddetect from {code / 'frauddetect' / '__init__.py'}" in proc.stderr


def test_model_and_endpoint_requests(full_launch):
    summary, _, _ = full_launch
    name = summary["training_job_name"]
    assert _request(summary, "CreateModel") == {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312",
            "ModelDataUrl": f"s3://fraud-ml-dev/models/{name}/output/model.tar.gz",
        },
        "ExecutionRoleArn": ROLE,
        "VpcConfig": {"Subnets": ["subnet-0a"], "SecurityGroupIds": ["sg-0b"]},
        "EnableNetworkIsolation": True,
    }
    config = _request(summary, "CreateEndpointConfig")
    assert config["EndpointConfigName"] == name and config["KmsKeyId"] == KMS
    assert config["ProductionVariants"] == [{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 2,
                                             "InstanceType": "ml.c5.xlarge", "InitialVariantWeight": 1.0}]
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": "s3://fraud-ml-dev/datacapture",
        "KmsKeyId": KMS,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
    assert _request(summary, "CreateEndpoint") == {"EndpointName": "fraud-dev", "EndpointConfigName": name}
    assert [r["operation"] for r in summary["requests"]] == [
        "CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"]


def _update_endpoint_accepted(model, **_):
    """Moto implements no UpdateEndpoint: answer it as SageMaker does (the request is recorded before)."""
    from botocore.awsrequest import AWSResponse

    parsed = {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/frauddetect",
              "ResponseMetadata": {"HTTPStatusCode": 200}}
    return AWSResponse("https://sagemaker.us-east-1.amazonaws.com/", 200, {}, None), parsed


def test_a_new_model_for_an_existing_endpoint_updates_it():
    cfg = LaunchConfig(role_arn=ROLE, bucket="fraud-ml-dev", region="us-east-1", deploy_start="2018-08-15")
    with offline_aws(cfg.region) as session:
        session.events.register("before-call.sagemaker.UpdateEndpoint", _update_endpoint_accepted)
        first = launch(cfg, session)
        archive = "s3://fraud-ml-dev/models/manual/model.tar.gz"
        second = launch(LaunchConfig(role_arn=ROLE, bucket="fraud-ml-dev", region="us-east-1", model_data_url=archive),
                        session)
    assert [r["operation"] for r in second["requests"]] == ["CreateModel", "CreateEndpointConfig", "UpdateEndpoint"]
    model = _request(second, "CreateModel")
    assert model["PrimaryContainer"]["ModelDataUrl"] == archive and "VpcConfig" not in model
    assert _request(second, "UpdateEndpoint") == {"EndpointName": "frauddetect",
                                                  "EndpointConfigName": model["ModelName"]}
    assert _request(first, "CreateEndpoint")["EndpointConfigName"] == first["training_job_name"]
    assert second["training_job_name"] is None and second["uploads"] == {}


def test_without_waiting_only_the_training_job_is_submitted():
    cfg = LaunchConfig(role_arn=ROLE, bucket="fraud-ml-dev", region="eu-west-1", deploy_start="2018-08-15")
    with offline_aws(cfg.region) as session:
        summary = launch(cfg, session, wait=False)
    assert [r["operation"] for r in summary["requests"]] == ["CreateTrainingJob"]
    assert summary["endpoint_name"] is None and summary["model_data_url"] is None


@pytest.mark.parametrize(
    ("region", "instance", "training", "serving"),
    [
        ("us-east-1", "ml.m5.xlarge", "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.21-cpu-py312",
         "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312"),
        ("eu-central-1", "ml.g5.xlarge",
         "763104351884.dkr.ecr.eu-central-1.amazonaws.com/tensorflow-training:2.21-gpu-py312",
         "763104351884.dkr.ecr.eu-central-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312"),
        ("cn-north-1", "ml.m5.xlarge",
         "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/tensorflow-training:2.21-cpu-py312",
         "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/tensorflow-inference:2.20-cpu-py312"),
    ],
)
def test_images_follow_region_version_and_instance_type(region, instance, training, serving):
    cfg = LaunchConfig(role_arn=ROLE, bucket="b-1", region=region, deploy_start="2018-08-15", instance_type=instance)
    assert (training_image_uri(cfg), serving_image_uri(cfg)) == (training, serving)


def test_an_unknown_framework_version_is_refused():
    cfg = LaunchConfig(role_arn=ROLE, bucket="b-1", region="eu-west-1", deploy_start="2018-08-15",
                       serving_tf_version="2.21")
    with pytest.raises(ValueError, match="Unsupported tensorflow version: 2.21"):
        serving_image_uri(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role_arn": "fraud-sagemaker"}, "not an IAM role ARN"),
        ({"bucket": "s3://fraud-ml-dev"}, "not an S3 bucket name"),
        ({"deploy_start": None}, "give one of deploy_start and train_start"),
        ({"train_start": "2018-07-25"}, "give one of deploy_start and train_start"),
        ({"deploy_start": "15/08/2018"}, "Invalid isoformat"),
        ({"subnets": ("subnet-1",)}, "both subnets and security group ids"),
        ({"capture_percent": 120}, r"capture_percent must be in \[0, 100\]"),
        ({"hyperparameters": {"train-start": "2018-08-15"}}, "not a 'deploy-start'/'train-start' hyperparameter"),
        ({"model_data_url": "models/model.tar.gz"}, "must be an s3:// URL"),
    ],
)
def test_bad_settings_are_refused(change, message):
    settings = {"role_arn": ROLE, "bucket": "fraud-ml-dev", "region": "eu-west-1", "deploy_start": "2018-08-15",
                **change}
    with pytest.raises(ValueError, match=message):
        LaunchConfig(**settings)


def test_no_deploy_trains_and_creates_no_endpoint(capsys):
    assert main(["--role", ROLE, "--bucket", "fraud-ml-dev", "--region", "eu-west-1", "--train-start", "2018-07-25",
                 "--no-deploy", "--dry-run"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["operation"] for r in summary["requests"]] == ["CreateTrainingJob"]
    assert _request(summary, "CreateTrainingJob")["HyperParameters"] == {"train-start": "2018-07-25"}
    assert summary["model_data_url"].endswith("/output/model.tar.gz") and summary["endpoint_name"] is None


def test_dry_run_command_prints_the_requests(capsys):
    assert main(["--role", ROLE, "--bucket", "fraud-ml-dev", "--region", "eu-west-1", "--deploy-start", "2018-08-15",
                 "--hyperparameter", "train-days=7", "--endpoint-name", "fraud-dev", "--dry-run"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["operation"] for r in summary["requests"]] == [
        "CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert _request(summary, "CreateTrainingJob")["HyperParameters"] == {"deploy-start": "2018-08-15", "train-days": "7"}
    assert summary["endpoint_name"] == "fraud-dev"
    assert "AWS_ACCESS_KEY_ID" not in os.environ or os.environ["AWS_ACCESS_KEY_ID"] != "dry-run"


def test_bad_options_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--role", "nope", "--bucket", "fraud-ml-dev", "--region", "eu-west-1", "--deploy-start", "2018-08-15"])
    assert info.value.code == 2 and "not an IAM role ARN" in capsys.readouterr().err


def test_request_log_reports_a_request_that_was_not_sent():
    import boto3

    log = RequestLog(boto3.Session(region_name="eu-west-1"))
    with pytest.raises(KeyError, match="no CreateTrainingJob request was sent"):
        log.params("CreateTrainingJob")


def test_the_training_window_goes_to_train_py_as_deploy_start_or_train_start():
    base = {"role_arn": ROLE, "bucket": "fraud-ml-dev", "region": "eu-west-1"}
    assert LaunchConfig(**base, deploy_start="2018-08-15").window() == {"deploy-start": "2018-08-15"}
    assert LaunchConfig(**base, train_start="2018-07-25").window() == {"train-start": "2018-07-25"}
