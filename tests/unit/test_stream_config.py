"""The streaming job's settings: one JobConfig, its arguments both ways, the two Kafka subscriptions, the
model options (SavedModel or SageMaker endpoint, where the threshold comes from), the Glue entry point."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from frauddetect.features import FEATURE_COLUMNS
from frauddetect.stream.config import SPARK_STATE_CONF, JobConfig, parse_args
from frauddetect.stream.job import scorer_spec

pytestmark = pytest.mark.unit

BASE = ["--bootstrap-servers", "b:9092", "--lake-uri", "s3://lake/x", "--checkpoint-uri", "s3://ck/x"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --model-dir (in-process SavedModel) or --endpoint-name"),
        (["--endpoint-name", "fraud"], "give --threshold, or --model-dir with the deployed model's metadata.json"),
        (["--model-dir", "m", "--endpoint-url", "http://127.0.0.1:8080"], "--endpoint-url need --endpoint-name"),
        (["--model-dir", "m", "--kafka-auth", "msk-iam"], "--kafka-auth msk-iam needs --kafka-region"),
        (["--model-dir", "m", "--kafka-auth", "scram"], "kafka_auth: Input should be 'none' or 'msk-iam'"),
        (["--model-dir", "m", "--max-offsets-per-trigger", "0"], "max_offsets_per_trigger: Input should be greater than 0"),
        (["--model-dir", "m", "--card-state-shards", "x"], "card_state_shards: Input should be a valid integer"),
        (["--model-dir", "m", "--kafka-option", "novalue"], "--kafka-option takes KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_with_a_usage_message_naming_them(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(BASE + extra)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_round_trip_and_defaults_live_in_the_config_only():
    config = JobConfig(bootstrap_servers="b:1", lake_uri="/l", checkpoint_uri="/c", model_dir="/m",
                       state_bootstrap=None, max_offsets_per_trigger=None, allowed_lateness_seconds=60,
                       kafka_options={"kafka.fetch.min.bytes": "1"})
    argv = config.to_argv()
    assert argv == ["--bootstrap-servers", "b:1", "--lake-uri", "/l", "--checkpoint-uri", "/c", "--model-dir", "/m",
                    "--state-bootstrap", "none", "--max-offsets-per-trigger", "none",
                    "--allowed-lateness-seconds", "60", "--kafka-option", "kafka.fetch.min.bytes=1"]
    parsed, master = parse_args(argv + ["--master", "local-cluster[2,1,1024]"])
    assert parsed == config and master == "local-cluster[2,1,1024]"
    defaults, _ = parse_args(BASE + ["--model-dir", "/m"])
    assert defaults.to_argv() == BASE + ["--model-dir", "/m"]
    # executors run elsewhere (local-cluster, Glue): local paths reach them absolute
    relative, _ = parse_args(BASE + ["--model-dir", "runs/m"])
    assert relative.model_dir == str(Path("runs/m").resolve())
    assert (defaults.state_bootstrap, defaults.max_offsets_per_trigger, defaults.allowed_lateness_seconds) == \
        ("lake", 50_000, 86_400)


def test_only_the_transactions_subscription_is_capped():
    config = JobConfig(bootstrap_servers="b:1", lake_uri="/l", checkpoint_uri="/c", model_dir="/m")
    tx, labels = config.source_options("transactions"), config.source_options("labels")
    assert tx["subscribe"] == "transactions" and tx["maxOffsetsPerTrigger"] == "50000"
    assert labels["subscribe"] == "labels" and "maxOffsetsPerTrigger" not in labels
    assert tx["plannedOffsetsPath"] == "/c/sources/transactions.json"  # the local source's restart point
    glue = JobConfig(bootstrap_servers="b:1", lake_uri="s3://l", checkpoint_uri="s3://c", model_dir="/m",
                     source_format="kafka").source_options("transactions")
    assert "plannedOffsetsPath" not in glue  # Spark's own Kafka source keeps its offsets in the checkpoint
    with pytest.raises(ValueError, match="reads transactions and labels"):
        config.source_options("fraud-alerts")
    assert SPARK_STATE_CONF["spark.sql.streaming.stateStore.providerClass"].endswith("RocksDBStateStoreProvider")
    assert SPARK_STATE_CONF["spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"] == "true"


def _metadata(path: Path, **values) -> Path:
    (path / "metadata.json").write_text(json.dumps({"feature_columns": list(FEATURE_COLUMNS), **values}))
    return path


def test_the_saved_model_mode_takes_threshold_and_version_from_the_metadata(tmp_path):
    _metadata(tmp_path, threshold=0.42, version=17)
    (tmp_path / "17").mkdir()
    (tmp_path / "17" / "saved_model.pb").write_bytes(b"")
    config, _ = parse_args(BASE + ["--model-dir", str(tmp_path)])
    spec = scorer_spec(config)
    assert (spec.threshold, spec.model_version, spec.model_dir, spec.endpoint_name) == (0.42, "17", str(tmp_path), None)
    flagged, _ = parse_args(BASE + ["--model-dir", str(tmp_path), "--threshold", "0.9"])
    assert scorer_spec(flagged).threshold == 0.9


def test_a_model_directory_without_a_saved_model_is_refused_before_spark_starts(tmp_path):
    _metadata(tmp_path, threshold=0.42, version=17)
    config, _ = parse_args(BASE + ["--model-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no <integer version>/saved_model.pb"):
        scorer_spec(config)


def test_an_endpoint_with_a_threshold_needs_no_model_files(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config, _ = parse_args(BASE + ["--endpoint-name", "fraud-prod", "--endpoint-region", "eu-west-1",
                                   "--threshold", "0.7"])
    spec = scorer_spec(config)
    scorer = spec.build()  # builds the client, sends nothing
    assert spec.threshold == 0.7 and scorer.endpoint_name == "fraud-prod" and scorer.model_version == "fraud-prod"
    assert scorer.client.meta.region_name == "eu-west-1"


def test_with_an_endpoint_the_metadata_gives_threshold_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _metadata(tmp_path, threshold=0.42, version=17)
    config, _ = parse_args(BASE + ["--endpoint-name", "fraud", "--endpoint-region", "eu-west-1",
                                   "--model-dir", str(tmp_path)])
    spec = scorer_spec(config)
    assert (spec.threshold, spec.build().model_version) == (0.42, "17")


def _glue_entry_point():
    path = Path(__file__).resolve().parents[2] / "glue_jobs" / "streaming_job.py"
    spec = importlib.util.spec_from_file_location("glue_streaming_job_entry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glue_entry_point_drops_glues_own_arguments():
    entry = _glue_entry_point()
    argv = ["--JOB_NAME", "j", "--conf", "spark.x=1 --conf spark.y=2", "--bootstrap-servers", "b:1",
            "--enable-metrics", "true", "--lake-uri", "s3://l"]
    assert entry._job_args(argv) == ["--bootstrap-servers", "b:1", "--lake-uri", "s3://l"]


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


def test_starting_offsets_json_is_split_between_the_two_sources():
    config = JobConfig(bootstrap_servers="b:1", lake_uri="/l", checkpoint_uri="/c", model_dir="/m",
                       starting_offsets='{"transactions": {"0": 42, "1": -2}}')
    assert json.loads(config.source_options("transactions")["startingOffsets"]) == {"transactions": {"0": 42, "1": -2}}
    assert config.source_options("labels")["startingOffsets"] == "earliest"
    with pytest.raises(ValueError, match="the job reads transactions and labels"):
        JobConfig(bootstrap_servers="b:1", lake_uri="/l", checkpoint_uri="/c", model_dir="/m",
                  starting_offsets='{"alerts": {"0": 1}}')
    with pytest.raises(ValueError, match="must be 'earliest', 'latest' or JSON"):
        JobConfig(bootstrap_servers="b:1", lake_uri="/l", checkpoint_uri="/c", model_dir="/m", starting_offsets="first")
