"""Progress lines (asd/progress.py): every item passes through; a log gets whole lines."""

import io

from asd.progress import progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_items_pass_through_unchanged_whether_shown_or_not():
    items = [3, 1, 2]
    assert list(progress(items, enabled=False, stream=io.StringIO())) == items
    assert list(progress(iter(items), desc="x", stream=io.StringIO())) == items


def test_a_log_gets_the_last_line_with_the_total_even_when_quick():
    out = io.StringIO()
    list(progress(range(4), desc="embed", stream=out, every_s=3600))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embed [" + "#" * 24 + "] 4/4 ")
    assert "\r" not in out.getvalue()


def test_without_a_length_it_counts_and_when_disabled_it_writes_nothing():
    out = io.StringIO()
    list(progress((i for i in range(3)), desc="clips", stream=out, every_s=0))
    assert [line.split(" ")[:2] for line in out.getvalue().splitlines()] == [
        ["clips", "1"], ["clips", "2"], ["clips", "3"],
    ]  # fmt: skip
    quiet = io.StringIO()
    list(progress(range(3), enabled=False, stream=quiet))
    assert quiet.getvalue() == ""


def test_a_terminal_redraws_one_bar_in_place():
    out = Tty()
    list(progress(range(2), total=4, desc="d", stream=out))
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "] 2/4 " in text and "#" * 12 + "-" * 12 in text  # half way
