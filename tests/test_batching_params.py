"""BatchingParameters: TF Serving's text format parsed, validated and written back."""

import pytest

from pytest_tfserving.batching import BatchingParameters, parse_batching_text
from pytest_tfserving.errors import ConfigError

TEXT = """
# the playbook's configuration
max_batch_size { value: 32 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 8
allowed_batch_sizes: 16
allowed_batch_sizes: 32
pad_variable_length_inputs: true
"""


def test_parses_every_field():
    params = parse_batching_text(TEXT)
    assert params == BatchingParameters(32, 1000, 100, 2, (8, 16, 32), True)


def test_round_trips_through_text():
    params = parse_batching_text(TEXT)
    assert parse_batching_text(params.to_text()) == params


def test_missing_fields_take_tf_serving_defaults():
    params = parse_batching_text("max_batch_size { value: 4 }")
    assert (params.batch_timeout_micros, params.max_enqueued_batches) == (0, 10)


def test_padded_size_picks_next_allowed_size():
    params = parse_batching_text(TEXT)
    assert [params.padded_size(n) for n in (1, 8, 9, 17, 32)] == [8, 8, 16, 32, 32]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size=0 must be >= 1"),
        ("max_batch_size { value: x }", "max_batch_size must be an integer, got 'x'"),
        ("max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16",
         "must equal max_batch_size (32)"),
        ("max_batch_size { value: 8 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 4",
         "strictly increasing"),
        ("max_batch_sise { value: 3 }", "Unknown batching field 'max_batch_sise'"),
        ("max_batch_size = 3", "Cannot parse batching parameters"),
        ("pad_variable_length_inputs: maybe", "must be true or false"),
    ],
)
def test_bad_text_names_field_and_value(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_batching_text(text, source="cfg.txt")
    assert fragment in str(info.value)
    assert "cfg.txt" in str(info.value)
