"""The streaming job's model options: in-process SavedModel (``--model-dir``) or SageMaker endpoint
(``--endpoint-name``, the Glue job's mode), and where the alert threshold comes from."""

import json

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
