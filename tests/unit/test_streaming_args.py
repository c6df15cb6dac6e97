"""The streaming job's model options: in-process SavedModel (``--model-dir``) or SageMaker endpoint
(``--endpoint-name``, the Glue job's mode), and where the alert threshold comes from; its Kafka auth options;
the Glue entry point's GlueContext."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from frauddetect.features import FEATURE_COLUMNS
from frauddetect.streaming import build_scorer, parse_args

pytestmark = pytest.mark.unit

BASE = ["--bootstrap-servers", "b:9092", "--lake-uri", "s3://lake/x", "--checkpoint-uri", "s3://ck/x"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --model-dir (in-process SavedModel) or --endpoint-name"),
        (["--endpoint-name", "fraud"], "give --threshold, or --model-dir with the deployed model's metadata.json"),
        (["--model-dir", "m", "--endpoint-url", "http://127.0.0.1:8080"], "--endpoint-url need --endpoint-name"),
        (["--model-dir", "m", "--kafka-auth", "msk-iam"], "--kafka-auth msk-iam needs --kafka-region"),
        (["--model-dir", "m", "--kafka-auth", "scram"], "argument --kafka-auth: invalid choice: 'scram'"),
    ],
)
def test_the_model_options_must_name_a_model_and_a_threshold(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(BASE + extra)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_saved_model_mode_is_unchanged():
    config = parse_args(BASE + ["--model-dir", "runs/model"])
    assert (config.model_dir, config.endpoint_name, config.threshold) == ("runs/model", None, None)


def test_an_endpoint_with_a_threshold_needs_no_model_files(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = parse_args(BASE + ["--endpoint-name", "fraud-prod", "--endpoint-region", "eu-west-1", "--threshold", "0.7"])
    scorer, threshold = build_scorer(config)  # builds the client; sends nothing
    assert threshold == 0.7 and scorer.endpoint_name == "fraud-prod" and scorer.model_version == "fraud-prod"
    assert scorer.client.meta.region_name == "eu-west-1"


def test_with_an_endpoint_the_metadata_gives_threshold_and_version_and_the_flag_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    (tmp_path / "metadata.json").write_text(
        json.dumps({"feature_columns": list(FEATURE_COLUMNS), "threshold": 0.42, "version": 17})
    )
    args = BASE + ["--endpoint-name", "fraud", "--endpoint-region", "eu-west-1", "--model-dir", str(tmp_path)]
    scorer, threshold = build_scorer(parse_args(args))
    assert (threshold, scorer.model_version) == (0.42, 17)
    _, threshold = build_scorer(parse_args(args + ["--threshold", "0.9"]))
    assert threshold == 0.9


def test_kafka_auth_defaults_to_plaintext_and_takes_msk_iam_with_a_region():
    local = parse_args(BASE + ["--model-dir", "m"])
    assert (local.kafka_auth, local.kafka_region) == ("none", None)
    config = parse_args(BASE + ["--model-dir", "m", "--kafka-auth", "msk-iam", "--kafka-region", "eu-west-1"])
    assert (config.kafka_auth, config.kafka_region) == ("msk-iam", "eu-west-1")


def _glue_entry_point():
    path = Path(__file__).resolve().parents[2] / "glue_jobs" / "streaming_job.py"
    spec = importlib.util.spec_from_file_location("glue_streaming_job_entry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glue_entry_point_creates_a_glue_context_only_on_glue(monkeypatch):
    entry = _glue_entry_point()
    spark = types.SimpleNamespace(sparkContext=object())
    monkeypatch.setitem(sys.modules, "awsglue", None)  # locally: not importable
    assert entry.start_glue_metrics(spark) is False and entry._glue_context is None

    created = []

    class GlueContext:  # a stand-in for awsglue.context.GlueContext
        def __init__(self, sc):
            created.append(sc)

    context = types.ModuleType("awsglue.context")
    context.GlueContext = GlueContext
    monkeypatch.setitem(sys.modules, "awsglue", types.ModuleType("awsglue"))
    monkeypatch.setitem(sys.modules, "awsglue.context", context)
    assert entry.start_glue_metrics(spark) is True
    assert created == [spark.sparkContext] and isinstance(entry._glue_context, GlueContext)
