"""The package's import graph: no cycle, no upward arrow (README 'Layout').

Every `import` / `from ... import` in vitgan_jax, at any depth (function-level ones included),
is an edge between two modules of the package; each module sits in one layer of LAYERS, and
an edge may only point to the same or a lower layer. Together with acyclicity this is the
house rule "imports point down only".
"""

import ast
import fnmatch
import os

from tests.helpers import REPO_ROOT

PACKAGE = 'vitgan_jax'
# Lowest first. A module may import modules of its own layer or of the layers before it.
LAYERS = (
    ('foundation', ('errors', 'images', 'sharding', 'workdir', 'curves', 'losses', 'augment',
                    'run_record', 'checkpoint', 'input_pipeline', 'tpu_env', 'tpu_specs')),
    ('models', ('models', 'models.*')),
    ('evaluation', ('evaluation', 'evaluation.inception', 'evaluation.weights',
                    'evaluation.metrics', 'evaluation.features')),
    ('gan', ('gan', 'health')),
    ('training step and evaluator', ('train', 'evaluation.train_eval')),
    ('programs', ('trainer', 'inference', 'tpu_compile')),
    ('entry points', ('main', '')),  # '' is vitgan_jax/__init__.py
)


def package_modules():
  """{'checkpoint': path, 'models.layers': path, '': path of __init__, ...}."""
  root = os.path.join(REPO_ROOT, PACKAGE)
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      if not name.endswith('.py'):
        continue
      rel = os.path.relpath(os.path.join(folder, name), root)[:-len('.py')].replace(os.sep, '.')
      if rel == '__init__':
        rel = ''
      elif rel.endswith('.__init__'):
        rel = rel[:-len('.__init__')]
      out[rel] = os.path.join(folder, name)
  return out


def import_edges():
  """{module: {modules of the package it imports}} from the source, at any depth."""
  modules = package_modules()
  edges = {m: set() for m in modules}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's package, up level - 1 packages
          parts = package.split('.') if package else []
          parts = parts[:len(parts) - (node.level - 1)]
          absolute = '.'.join([PACKAGE, *parts, *([node.module] if node.module else [])])
        else:
          absolute = node.module or ''
        # `from vitgan_jax import gan` imports the module gan; `from vitgan_jax.gan import GAN`
        # imports from the module gan.
        targets = [f'{absolute}.{alias.name}' for alias in node.names]
      else:
        continue
      for target in targets:
        if not target.startswith(PACKAGE + '.'):
          continue
        name = target[len(PACKAGE) + 1:]
        while name and name not in modules:  # 'gan.GAN' -> 'gan'
          name = name.rpartition('.')[0]
        if name != module:
          edges[module].add(name)
  return edges


def layer_of(module: str) -> int:
  for i, (_, patterns) in enumerate(LAYERS):
    if any(fnmatch.fnmatchcase(module, p) for p in patterns):
      return i
  raise AssertionError(f'{PACKAGE}.{module} is in no layer of tests/test_layout.py LAYERS')


def find_cycle(edges):
  """One cycle as a list of modules, or None."""
  state = {}

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(edges[node]):
      if state.get(nxt) == 'open':
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [nxt])
        if found:
          return found
    state[node] = 'done'
    return None

  for start in sorted(edges):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_every_module_has_a_layer():
  for module in package_modules():
    layer_of(module)


def test_import_graph_has_no_cycle():
  assert find_cycle(import_edges()) is None, ' -> '.join(find_cycle(import_edges()))


def test_imports_point_down_only():
  upward = [f'{a or PACKAGE} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})'
            for a, targets in import_edges().items() for b in sorted(targets)
            if layer_of(b) > layer_of(a)]
  assert not upward, upward


def test_models_know_nothing_of_training():
  for module, targets in import_edges().items():
    if module == 'models' or module.startswith('models.'):
      outside = [t for t in targets if not (t == 'models' or t.startswith('models.'))]
      assert not outside, (module, outside)


def test_only_the_gan_assembles_networks_and_optimizers():
  """No file but gan.py calls both model builders (README: one GAN value)."""
  offenders = []
  for folder in ('vitgan_jax', 'bench', 'tests'):
    for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
      for name in files:
        path = os.path.join(root, name)
        if not name.endswith('.py') or path.endswith(os.path.join('vitgan_jax', 'gan.py')):
          continue
        with open(path) as f:
          text = f.read()
        if 'build_generator(' in text and 'build_discriminator(' in text and 'optax.' in text:
          offenders.append(os.path.relpath(path, REPO_ROOT))
        if 'create_models(' in text or 'create_optimizers(' in text:
          offenders.append(os.path.relpath(path, REPO_ROOT))
  assert not [o for o in offenders if o != os.path.join('tests', 'test_layout.py')], offenders
