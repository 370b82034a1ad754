"""The repository's shape as the README describes it: the layout table names every module,
no package module outgrows a reader's head, and the package has no import cycle."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'alexnet_tf'
MAX_LINES = 400


def _layout_paths():
  """The paths in the first column of the README's Layout table."""
  text = (ROOT / 'README.md').read_text(encoding='utf-8')
  table = text.split('## Layout', 1)[1]
  paths = []
  for line in table.splitlines():
    cells = line.split('|')
    if len(cells) > 2:
      paths += re.findall(r'`([^`]+)`', cells[1])
  return paths


def _modules():
  """{dotted name: path} of every module of the package."""
  return {'.'.join(path.relative_to(ROOT).with_suffix('').parts).replace('.__init__', ''): path
          for path in PACKAGE.rglob('*.py')}


def test_the_layout_table_matches_the_tree():
  paths = _layout_paths()
  assert paths, 'README.md has no Layout table'
  directory = None
  named = set()
  for path in paths:
    # "`alexnet_tf/train.py`, `evaluate.py`" : a bare file name is in the previous directory.
    full = path if '/' in path else f'{directory}/{path}'
    directory = full.rsplit('/', 1)[0] if not full.endswith('/') else full.rstrip('/')
    assert (ROOT / full).exists(), f'README layout names {full}, which does not exist'
    named.add(full.rstrip('/'))
  for entry in sorted(PACKAGE.iterdir()):
    if entry.name.startswith(('_', '.')) or entry.suffix not in ('.py', ''):
      continue
    assert f'alexnet_tf/{entry.name}' in named, f'README layout does not list {entry.name}'


def test_no_module_of_the_package_is_over_the_limit():
  long = {name: len(path.read_text(encoding='utf-8').splitlines())
          for name, path in _modules().items()}
  assert {n: c for n, c in long.items() if c > MAX_LINES} == {}


def _imports(name: str, path: pathlib.Path):
  """The package modules that `name` imports at module level."""
  modules = _modules()
  found = set()
  for node in ast.parse(path.read_text(encoding='utf-8')).body:
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      base = node.module
      if node.level:  # relative
        base = '.'.join(name.split('.')[:-node.level] + [node.module])
      found.add(base)
      found.update(f'{base}.{alias.name}' for alias in node.names)
  return {m for m in found if m in modules and m != name}


def test_the_package_has_no_import_cycle():
  graph = {name: _imports(name, path) for name, path in _modules().items()}
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for child in graph[node]:
      if state.get(child) == 'open':
        cycle = stack[stack.index(child):] + [child]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if child not in state:
        visit(child, stack + [child])
    state[node] = 'done'

  for node in graph:
    if node not in state:
      visit(node, [node])
