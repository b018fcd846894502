"""Reading a table of clips: rows named in errors, bytes read exactly as their file is."""

import base64

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd.data.index import read_wav
from asd.errors import AsdError
from asd.serve.audio import batches, read_audio, section_meta


def _wav(path, rate=16000, seconds=0.25, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([wave * (c + 1) for c in range(channels)], axis=1), rate)
    return path


def test_section_meta_types_each_row_and_names_a_bad_one():
    table = pd.DataFrame({"machine": ["fan", 7], "section": ["01", 2.0], "audio": ["a", "b"]})
    meta = section_meta(table)
    assert meta["machine"].tolist() == ["fan", "7"] and meta["section"].tolist() == [1, 2]
    with pytest.raises(AsdError, match=r"row 1: section must be an integer, got 'two'"):
        section_meta(table.assign(section=[0, "two"]))
    with pytest.raises(AsdError, match=r"lacks column\(s\) section, audio"):
        section_meta(table[["machine"]])


def test_base64_bytes_and_raw_bytes_read_exactly_as_the_file(tmp_path):
    path = _wav(tmp_path / "clip.wav", channels=2)
    data = path.read_bytes()
    from_file, note = read_audio(str(path), 16000, 1, row=0)
    assert note == ""
    np.testing.assert_array_equal(from_file, read_wav(path, 16000, 1))
    for value in (base64.b64encode(data).decode(), data, bytearray(data)):
        wave, note = read_audio(value, 16000, 1, row=3)
        np.testing.assert_array_equal(wave, from_file)
        assert note == ""


def test_another_rate_is_resampled_and_the_note_says_so(tmp_path):
    path = _wav(tmp_path / "clip.wav", rate=8000)
    wave, note = read_audio(base64.b64encode(path.read_bytes()).decode(), 16000, 0, row=0)
    assert note == "resampled 8000 Hz to 16000 Hz"
    assert wave.dtype == np.float32 and len(wave) == 4000  # 0.25 s at 16 kHz


def test_unreadable_audio_names_its_row_and_no_temporary_file():
    garbage = base64.b64encode(b"not a wav file at all").decode()
    with pytest.raises(AsdError, match=r"^row 2: not readable audio \(") as err:
        read_audio(garbage, 16000, 0, row=2)
    assert "asd-clip-" not in str(err.value)  # the temporary path is replaced by 'the clip'
    for value in ("", None, 3, "no/such/file.wav"):
        with pytest.raises(AsdError, match="^row 5: audio (must be|is neither)"):
            read_audio(value, 16000, 0, row=5)
    long_text = "A" * 5000 + "!"  # too long for a file name, not base64 either
    with pytest.raises(AsdError, match="neither a file this server can read nor base64"):
        read_audio(long_text, 16000, 0, row=0)


def test_batches_cover_the_items_in_order():
    items = list(range(7))
    assert [list(b) for b in batches(items, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches([], 3)) == []
