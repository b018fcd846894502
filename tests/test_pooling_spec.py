import pytest

from asd.errors import AsdError
from asd.pooling_spec import pooling_error, pooling_parts


@pytest.mark.parametrize(
    "spec, parts",
    [
        ("mean", (("mean", 0.0),)),
        (" max ", (("max", 0.0),)),
        ("meanstd", (("mean", 0.0), ("std", 0.0))),
        ("mean_std", (("mean", 0.0), ("std", 0.0))),
        ("p90", (("percentile", 90.0),)),
        ("p12.5", (("percentile", 12.5),)),
        ("gwrp0.9", (("gwrp", 0.9),)),
        ("gwrp1", (("gwrp", 1.0),)),
        ("twfr", (("twfr", 0.0),)),
        ("mean + max+p50", (("mean", 0.0), ("max", 0.0), ("percentile", 50.0))),
    ],
)
def test_parts_of_each_form(spec, parts):
    assert pooling_parts(spec) == parts
    assert pooling_error(spec) == ""


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "non-empty string"),
        ("median", "unknown pooling 'median'"),
        ("mean+", "unknown pooling ''"),
        ("p101", "percentile 101.0 must be in"),
        ("gwrp", "gwrp needs a decay"),
        ("gwrp1.5", "gwrp decay 1.5 must be in"),
    ],
)
def test_a_bad_spec_names_its_bad_part(spec, message):
    with pytest.raises(AsdError, match=message):
        pooling_parts(spec)
    assert message.split("'")[0] in pooling_error(spec)


def test_a_non_string_is_refused():
    with pytest.raises(AsdError, match="non-empty string"):
        pooling_parts(90)  # type: ignore[arg-type]
