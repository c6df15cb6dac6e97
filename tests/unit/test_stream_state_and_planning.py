"""How the operators store histories (packed rows, base and delta per id, when a delta is merged) and how the
local Kafka source plans a capped micro-batch (as Spark's own Kafka source spreads maxOffsetsPerTrigger)."""

import numpy as np
import pandas as pd
import pytest
from stream_harness import MapState

from frauddetect.stream.keyed_state import BASE, BASE_REFRESH_MS, DELTA, MIN_DELTA_ROWS, KeyedHistory, RowPack
from frauddetect.stream.source_options import KafkaSourceOptions, rate_limit

pytestmark = pytest.mark.unit

PACK = RowPack({"transaction_id": object, "time_us": np.int64, "tx_fraud": np.int8, "label_source": object})


def rows(ids, start=0):
    n = len(ids)
    return {"transaction_id": np.array(ids, dtype=object), "time_us": np.arange(start, start + n, dtype=np.int64),
            "tx_fraud": np.zeros(n, dtype=np.int8), "label_source": np.array([None, "x"] * (n // 2) + [None] * (n % 2),
                                                                                dtype=object)}


@pytest.mark.parametrize("values", [["a", "b", None], [None], [], ["", "z"], [None, None], [""], ["é€", None, "x"]])
def test_packed_rows_round_trip_with_nulls_and_empty_strings(values):
    packed = {"transaction_id": np.array(values, dtype=object), "time_us": np.arange(len(values), dtype=np.int64),
              "tx_fraud": np.ones(len(values), dtype=np.int8), "label_source": np.array(values, dtype=object)}
    back = PACK.decode(PACK.encode(packed))
    assert list(back["transaction_id"]) == values and list(back["label_source"]) == values
    assert back["time_us"].tolist() == list(range(len(values)))


def test_an_id_appends_to_its_delta_until_the_delta_is_merged_into_its_base():
    state = MapState()
    first = KeyedHistory(state, PACK, now_ms=0)
    first.read(["card"])
    assert first.needs_merge("card", 3)  # a new id starts with a base
    first.write("card", rows(["t0", "t1", "t2"]), merged=rows(["t0", "t1", "t2"]))
    assert set(state.data) == {("card", BASE)}
    for i in range(MIN_DELTA_ROWS - 1):
        history = KeyedHistory(state, PACK, now_ms=1)
        held, owners = history.read(["card"])
        assert len(owners) == 3 + i and set(owners) == {"card"}
        assert not history.needs_merge("card", 1)
        history.write("card", rows([f"n{i}"], 10 + i), merged=None)
    assert state.data[("card", DELTA)][0] == MIN_DELTA_ROWS - 1 and state.data[("card", BASE)][0] == 3
    history = KeyedHistory(state, PACK, now_ms=2)
    held, _ = history.read(["card"])
    assert history.needs_merge("card", 1)
    history.write("card", rows(["last"], 99), merged=held)
    assert set(state.data) == {("card", BASE)} and state.data[("card", BASE)][0] == 3 + MIN_DELTA_ROWS - 1


def test_an_old_base_is_rewritten_so_the_time_to_live_never_expires_an_active_id():
    state = MapState()
    KeyedHistory(state, PACK, now_ms=0).write("t", rows(["a"]), merged=rows(["a"]))
    soon = KeyedHistory(state, PACK, now_ms=BASE_REFRESH_MS - 1)
    soon.read(["t"])
    assert not soon.needs_merge("t", 1)
    later = KeyedHistory(state, PACK, now_ms=BASE_REFRESH_MS)
    later.read(["t"])
    assert later.needs_merge("t", 1)


def test_a_read_of_many_ids_of_a_shard_is_one_pass_of_the_iterator():
    state = MapState()
    for i in range(20):
        KeyedHistory(state, PACK, now_ms=0).write(f"k{i}", rows([f"t{i}"]), merged=rows([f"t{i}"]))
    state.calls = 0
    held, owners = KeyedHistory(state, PACK).read([f"k{i}" for i in range(10)], shard_size=20)
    assert state.calls == 1 and sorted(owners) == sorted(f"k{i}" for i in range(10))
    state.calls = 0
    KeyedHistory(state, PACK).read(["k1", "k2"], shard_size=20)
    assert state.calls == 4  # base and delta of each


def test_the_cap_is_spread_over_partitions_in_proportion_to_their_lag_as_spark_does():
    start = {("transactions", 0): 0, ("transactions", 1): 100, ("labels", 0): 0}
    end = {("transactions", 0): 1_000, ("transactions", 1): 200, ("labels", 0): 900}
    # lags 1000, 100, 900 (2000 in all): a cap of 500 gives 250, 25, 225
    assert rate_limit(500, start, end) == {("transactions", 0): 250, ("transactions", 1): 125, ("labels", 0): 225}
    # a partition whose share is below one record still moves by one; nothing goes past its end
    assert rate_limit(10, {("t", 0): 0, ("t", 1): 0}, {("t", 0): 10_000, ("t", 1): 1}) == {("t", 0): 9, ("t", 1): 1}
    assert rate_limit(10_000, start, end) == end
    assert rate_limit(5, {("t", 0): 7}, {("t", 0): 7}) == {("t", 0): 7}  # no lag, no move


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subscribe": "t"}, "'kafka.bootstrap.servers' is required"),
        ({"kafka.bootstrap.servers": "b:1"}, "'subscribe' (comma-separated topics) is required"),
        ({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "assign": "x"}, "'assign' is not supported"),
        ({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "maxOffsetsPerTrigger": "0"}, "positive integer"),
        ({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "kafka.enable.auto.commit": "true"},
         "'kafka.enable.auto.commit' is not supported"),
        ({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "startingOffsets": '{"u": {"0": 1}}'}, "not subscribed"),
        ({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "failOnDataLoss": "maybe"}, "'true' or 'false'"),
    ],
)
def test_source_options_are_checked_naming_the_bad_one(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KafkaSourceOptions.parse(options)


def test_source_options_are_case_insensitive_as_in_spark():
    parsed = KafkaSourceOptions.parse({"KAFKA.BOOTSTRAP.SERVERS": "b:1", "Subscribe": "a, b", "MAXOFFSETSPERTRIGGER": "7",
                                       "startingOffsets": '{"a": {"0": 5, "1": -2}}'})
    assert parsed.topics == ("a", "b") and parsed.max_offsets_per_trigger == 7
    assert parsed.starting_offsets == {"a": {0: 5, 1: -2}}
    assert pd.Series(parsed.consumer_config())["enable.partition.eof"]
