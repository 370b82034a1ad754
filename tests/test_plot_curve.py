"""tools/plot_curve.py: a run's history.jsonl becomes a learning-curve PNG."""

import json
import pathlib
import sys

from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tools'))
import plot_curve  # noqa: E402  pylint: disable=wrong-import-position


def test_history_becomes_a_png(tmp_path, capsys):
  rows = [dict(step=100 * i, time=1000.0 + 60 * i, top1_accuracy=0.1 * i,
               top5_accuracy=0.5 + 0.04 * i) for i in range(1, 11)]
  (tmp_path / 'history.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  output = tmp_path / 'curve.png'
  assert plot_curve.main([str(tmp_path), '--output', str(output), '--mark', '0.85=target']) == 0
  with Image.open(output) as image:
    assert image.format == 'PNG' and image.size == (900, 520)
    # Something was drawn in the series' colours, not only axes on white.
    colours = {pixel[:3] for pixel in image.convert('RGB').getdata()}
  assert len(colours) > 50
  assert capsys.readouterr().out.strip() == str(output)


def test_a_directory_without_history_is_one_line(tmp_path, capsys):
  assert plot_curve.main([str(tmp_path), '--output', str(tmp_path / 'x.png')]) == 1
  assert capsys.readouterr().err.strip().startswith('error: ')
