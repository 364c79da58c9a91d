"""pdeblocks._io: the one atomic writer (old file or new file, never a partial one; no temporary left)."""
import json

import pytest

from pdeblocks._io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_and_leaves_no_temporary(tmp_path):
    atomic_write_bytes(tmp_path / 'a.bin', b'\x00\x01')
    atomic_write_text(tmp_path / 'b.txt', 'λ = 0.5\n')
    atomic_write_json(tmp_path / 'c.json', {'b': 1, 'a': [2.5]})
    assert (tmp_path / 'a.bin').read_bytes() == b'\x00\x01'
    assert (tmp_path / 'b.txt').read_text(encoding='utf-8') == 'λ = 0.5\n'
    assert json.loads((tmp_path / 'c.json').read_text()) == {'a': [2.5], 'b': 1}
    assert (tmp_path / 'c.json').read_text().endswith('\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.bin', 'b.txt', 'c.json']


def test_temporary_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / 'fig.png') as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == '.png' and tmp.name != 'fig.png'
        tmp.write_bytes(b'png')
    assert (tmp_path / 'fig.png').read_bytes() == b'png'


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / 'table.md'
    target.write_text('old')
    with pytest.raises(RuntimeError, match='interrupted'):
        with atomic_path(target) as tmp:
            tmp.write_text('half')
            raise RuntimeError('interrupted')
    assert target.read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['table.md']
